"""The same statements over other shapes of key table (docs/key-table.md): text ids, a uuid
account, both markers; and identifiers quoted as the server quotes them."""

from __future__ import annotations

from typing import Any

from cleanup_worker.adapters.postgres import key_table, keys
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from cleanup_worker.adapters.postgres.quoting import quote_ident
from cleanup_worker.domain.key_table import KeyTableMapping
from testkit.events import at, event
from tests.integration.test_key_table_mapping import audit


async def test_identifiers_are_quoted_as_postgresql_quotes_them(db: Any) -> None:
    """quote_ident agrees with the server's on every keyword and on awkward names."""
    words = [row["word"] for row in await db.fetch("SELECT word FROM pg_get_keywords()")]
    names = [*words, "ApiKeys", "keyId", 'we"ird', "1st", "with space", "ünï", "a$b", "_x"]
    theirs = await db.fetchval(
        "SELECT array_agg(quote_ident(n)) FROM unnest($1::text[]) AS n", names
    )
    assert [quote_ident(name) for name in names] == theirs


SHAPE_B = KeyTableMapping(
    table="KeyStore.keys",
    id_column="id",
    account_column="accountUuid",
    user_column="userNo",
    created_column="madeAt",
    revoked_at_column="revokedAt",
    state_column="state",
    live_states=("live", "rotating"),
    revoked_state="dead",
    reason_column="why",
    revoked_by_column=None,
)
ACCOUNT_B = "7d0c5f3e-3a0b-4c3e-9f4e-2b1d8f6a9c10"


async def test_a_text_id_uuid_account_table_with_both_markers(db: Any) -> None:
    """Text ids, a uuid account, a bigint user, a timestamp without time zone and both
    markers: R1 and R5 write both markers and the reason column, key_revocations the rest."""
    await db.execute(
        'CREATE SCHEMA "KeyStore"; CREATE TABLE "KeyStore".keys (id text PRIMARY KEY, '
        '"accountUuid" uuid NOT NULL, "userNo" bigint NOT NULL, "madeAt" timestamp NOT NULL, '
        '"revokedAt" timestamptz, state text NOT NULL, why text)'
    )
    key_table.use(await key_table.load(db, SHAPE_B))
    try:
        rows = [("ApiKey-a", 7, "live"), ("ApiKey-b", 8, "live"), ("ApiKey-c", 7, "expired")]
        for key_id, user, state in rows:
            await db.execute(
                'INSERT INTO "KeyStore".keys VALUES ($1, $2, $3, $4, NULL, $5)',
                key_id,
                ACCOUNT_B,
                user,
                at(-10).replace(tzinfo=None),
                state,
            )
        removal = event("removed", ACCOUNT_B, "7", at(0))
        async with db.transaction():
            assert await keys.revoke_for_removals(db, [removal], announce=True) == 1
            orphaned = await keys.revoke_orphans(
                db, ["ApiKey-b", "ApiKey-c"], "backfill:r", MembershipSource.TABLE, announce=False
            )
        assert orphaned == ["ApiKey-b"]
        found = await db.fetch(
            'SELECT id, state, "revokedAt" IS NOT NULL AS marked, why FROM "KeyStore".keys'
        )
        assert {(r["id"], r["state"], r["marked"], r["why"]) for r in found} == {
            ("ApiKey-a", "dead", True, "member_removed"),
            ("ApiKey-b", "dead", True, "orphaned"),
            ("ApiKey-c", "expired", False, None),
        }
        assert await audit(db) == {
            "ApiKey-a": ("member_removed", removal.ref),
            "ApiKey-b": ("orphaned", "backfill:r"),
        }
    finally:
        key_table.use(key_table.DEFAULT)
