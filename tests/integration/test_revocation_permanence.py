"""R4 kept by PostgreSQL: migration 0007's trigger refuses to undo or rewrite a revocation."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from cleanup_worker.adapters.postgres.sqlstate import (
    REVOCATION_IS_PERMANENT,
    is_per_event,
    is_transient,
)
from cleanup_worker.bootstrap import backfill_job
from cleanup_worker.service.backfill.options import BackfillRequest
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import publisher
from testkit.processes import running_worker
from testkit.waiting import eventually

REVOKED_BY = "event:/accounts#earlier"


async def revoked_key(db: Any, account_id: str = "acct", iam_id: str = "alice") -> uuid.UUID:
    """A key that another service's UPDATE revoked, as R1 would have."""
    key: uuid.UUID = await seed_key(db, account_id, iam_id, at(0))
    await db.execute(
        "UPDATE api_keys SET revoked_at = now(), revocation_reason = 'member_removed', "
        "revoked_by = $2 WHERE id = $1",
        key,
        REVOKED_BY,
    )
    return key


async def revocation(db: Any, key: uuid.UUID) -> tuple[Any, ...]:
    row = await db.fetchrow(
        "SELECT revoked_at, revocation_reason, revoked_by FROM api_keys WHERE id = $1", key
    )
    return tuple(row.values())


async def refused(db: Any, sql: str, *args: Any) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as caught:
        await db.execute(sql, *args)
    assert caught.value.sqlstate == REVOCATION_IS_PERMANENT, caught.value
    return caught.value


# --- what the trigger refuses ------------------------------------------------------------------


async def test_superuser_cannot_unrevoke_a_key(db: Any) -> None:
    """Clearing revoked_at of a revoked key fails with CW001, even for a superuser."""
    assert await db.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    key = await revoked_key(db)
    before = await revocation(db, key)
    error = await refused(db, "UPDATE api_keys SET revoked_at = NULL WHERE id = $1", key)
    assert "is revoked, and a revocation is permanent" in str(error)
    assert await revocation(db, key) == before


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("revocation_reason", "'orphaned'"),
        ("revocation_reason", "NULL"),
        ("revoked_by", "'backfill:someone-else'"),
        ("revoked_at", "revoked_at - interval '1 day'"),
    ],
)
async def test_rewriting_a_revocation_fails(db: Any, column: str, value: str) -> None:
    """Changing any revocation column of a revoked key fails with CW001 and names the column."""
    key = await revoked_key(db)
    before = await revocation(db, key)
    error = await refused(db, f"UPDATE api_keys SET {column} = {value} WHERE id = $1", key)
    assert column in (error.detail or "")
    assert await revocation(db, key) == before


async def test_one_revoked_key_fails_the_whole_statement(db: Any) -> None:
    """A bulk un-revoke changes no row at all, live keys' rows included."""
    revoked = await revoked_key(db)
    live = await seed_key(db, "acct", "bob", at(0))
    await refused(db, "UPDATE api_keys SET revoked_at = NULL, name = 'bulk'")
    names = await db.fetch("SELECT name FROM api_keys WHERE id = ANY($1)", [revoked, live])
    assert {row["name"] for row in names} == {""}


async def test_worker_role_cannot_unrevoke_a_key(db: Any) -> None:
    """cleanup_worker may UPDATE the revocation columns, yet cannot clear one."""
    key = await revoked_key(db)
    await db.execute("SET ROLE cleanup_worker")
    await refused(db, "UPDATE api_keys SET revoked_at = NULL WHERE id = $1", key)


async def test_replication_role_does_not_bypass_the_trigger(db: Any) -> None:
    """session_replication_role = replica, which skips ordinary triggers, does not skip it."""
    key = await revoked_key(db)
    await db.execute("SET session_replication_role = replica")
    await refused(db, "UPDATE api_keys SET revoked_at = NULL WHERE id = $1", key)


async def test_disabling_the_trigger_is_the_owners_way_around(db: Any) -> None:
    """The table owner can DISABLE TRIGGER and then un-revoke; the worker role cannot."""
    key = await revoked_key(db)
    await db.execute("SET ROLE cleanup_worker")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_revocation_is_permanent")
    await db.execute("RESET ROLE")
    async with db.transaction():
        await db.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_revocation_is_permanent")
        await db.execute("UPDATE api_keys SET revoked_at = NULL WHERE id = $1", key)
        await db.execute(
            "ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_revocation_is_permanent"
        )
    assert await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", key) is None


async def test_refusal_is_neither_transient_nor_per_event(db: Any) -> None:
    """CW001 is neither retried nor dead-lettered: a worker that causes it stops."""
    key = await revoked_key(db)
    error = await refused(db, "UPDATE api_keys SET revoked_at = NULL WHERE id = $1", key)
    assert not is_transient(error)
    assert not is_per_event(error)


# --- what it lets through ----------------------------------------------------------------------


async def test_revoking_a_live_key_works(db: Any) -> None:
    """A live key is revoked as before."""
    key = await seed_key(db, "acct", "alice", at(0))
    await db.execute(
        "UPDATE api_keys SET revoked_at = now(), revocation_reason = 'orphaned', "
        "revoked_by = 'backfill:run' WHERE id = $1",
        key,
    )
    assert await revoked_keys(db) == {key: ("orphaned", "backfill:run")}


async def test_other_columns_of_a_revoked_key_may_change(db: Any) -> None:
    """Renaming a revoked key, or rewriting its revocation with the same values, is allowed."""
    key = await revoked_key(db)
    before = await revocation(db, key)
    await db.execute("UPDATE api_keys SET name = 'old laptop' WHERE id = $1", key)
    await db.execute(
        "UPDATE api_keys SET revoked_at = revoked_at, revocation_reason = revocation_reason, "
        "revoked_by = revoked_by WHERE id = $1",
        key,
    )
    assert await db.fetchval("SELECT name FROM api_keys WHERE id = $1", key) == "old laptop"
    assert await revocation(db, key) == before


async def test_worker_revocations_are_unaffected(settings: Settings, db: Any) -> None:
    """The worker revokes live keys past revoked ones, and re-deliveries and a second removal
    of the same member go through without touching a revocation."""
    earlier = await revoked_key(db)
    live = await seed_key(db, "acct", "alice", at(1))
    first = event("removed", "acct", "alice", at(5))
    second = event("removed", "acct", "alice", at(8))

    async def ledger_has(count: int) -> bool:
        return await ledger_size(db) == count

    async with publisher(settings) as pub, running_worker(settings):
        await pub.events([first])
        await eventually(lambda: ledger_has(1))
        await pub.events([first, second])
        await eventually(lambda: ledger_has(2))
    assert await revoked_keys(db) == {
        earlier: ("member_removed", REVOKED_BY),
        live: ("member_removed", first.ref),
    }


async def test_backfill_revocations_are_unaffected(database_url: str, db: Any) -> None:
    """The backfill revokes orphans beside keys revoked before, twice over, without a refusal."""
    await db.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, changed_at) "
        "VALUES ('acct', 'bob', 'active', $1)",
        at(0),
    )
    earlier = await revoked_key(db, iam_id="gone")
    orphan = await seed_key(db, "acct", "gone", at(1))
    settings = Settings(database_url=database_url, log_format="json", retry_max_wait_s=0.5)  # type: ignore[arg-type]
    request = BackfillRequest(execute=True, max_fraction=1.0)
    first = await backfill_job(settings, request).run()
    second = await backfill_job(settings, request).run()
    assert sum(second.revoked.values()) == 0
    assert await revoked_keys(db) == {
        earlier: ("member_removed", REVOKED_BY),
        orphan: ("orphaned", f"backfill:{first.run_id}"),
    }
