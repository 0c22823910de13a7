"""The worker's least-privilege login on a mapped key table (docs/key-table.md, "Rights"):
with the grants `migrate --print-key-table-sql` prints, it revokes keys, and it can do
nothing else to them."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from testkit.database import revoked_keys, seed_key
from testkit.events import at
from testkit.key_rows import key_states
from testkit.key_tables import KeyTableShape, active, member, quote
from testkit.processes import run_backfill
from tests.integration.secure.conftest import SecureServices, secured_database_url

MAPPED = pytest.mark.parametrize("key_shape", ["billing", "keyring"], indirect=True)


async def _orphans_and_keeper(db: Any) -> tuple[list[Any], Any]:
    """Three keys of a member with no membership row (orphaned) and one of an active member."""
    account, keeper = member("acct", "stays")
    await db.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, changed_at) "
        "VALUES ($1, $2, 'active', $3)",
        account,
        keeper,
        at(0),
    )
    orphans = [await seed_key(db, *member("acct", "gone"), at(i)) for i in range(3)]
    return orphans, await seed_key(db, account, keeper, at(0))


@MAPPED
async def test_the_login_revokes_in_the_mapped_table(
    secure: SecureServices, database_url: str, db: Any
) -> None:
    """A backfill as the login (SCRAM over verify-full TLS, only the cleanup_worker role)
    revokes the orphaned keys of the mapped table, with their reason and revoked_by."""
    orphans, keeper = await _orphans_and_keeper(db)
    summary = await run_backfill(secured_database_url(secure, database_url))
    assert summary.keys_revoked == len(orphans)
    revoked = await revoked_keys(db)
    assert revoked == {key: ("orphaned", f"backfill:{summary.run_id}") for key in orphans}
    assert (await key_states(db))[keeper] == "live"


def _other_columns(shape: KeyTableShape) -> list[str]:
    marker = {shape.revoked_at, shape.state, shape.reason, shape.revoked_by}
    return [
        c
        for c in (
            shape.id.name,
            shape.account.name,
            shape.user.name,
            shape.created,
            *shape.extra_insert,
        )
        if c not in marker
    ]


@MAPPED
async def test_the_login_cannot_insert_delete_or_rewrite_keys(
    secure: SecureServices, database_url: str, db: Any, key_shape: KeyTableShape
) -> None:
    """As the login: INSERT, DELETE, TRUNCATE and an UPDATE of any column but the marker's
    are refused; the table is unchanged."""
    _, keeper = await _orphans_and_keeper(db)
    before = await db.fetch(f"SELECT * FROM {key_shape.qualified} ORDER BY 1")
    identity = (
        await db.fetchval(
            "SELECT array_agg(attname) FILTER (WHERE attidentity <> '') FROM pg_attribute "
            "WHERE attrelid = $1::regclass AND attnum > 0",
            key_shape.qualified,
        )
        or []
    )
    login = await asyncpg.connect(secured_database_url(secure, database_url))
    table, key = key_shape.qualified, key_shape.id.sql
    try:
        refused = [
            f"INSERT INTO {table} ({key_shape.account.sql}, {key_shape.user.sql}) "
            f"SELECT {key_shape.account.sql}, {key_shape.user.sql} FROM {table} LIMIT 1",
            f"DELETE FROM {table}",
            f"TRUNCATE {table}",
            *(
                # An identity column accepts only DEFAULT, and says so before the rights.
                f"UPDATE {table} SET {quote(column)} = "
                f"{'DEFAULT' if column in identity else quote(column)} WHERE {key} = $1"
                for column in _other_columns(key_shape)
            ),
        ]
        for statement in refused:
            args = (keeper,) if "$1" in statement else ()
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await login.execute(statement, *args)
    finally:
        await login.close()
    assert await db.fetch(f"SELECT * FROM {key_shape.qualified} ORDER BY 1") == before
    assert active() is key_shape
