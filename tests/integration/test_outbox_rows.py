"""The outbox's rows in the real database ("The outbox", docs/design.md): a revoking statement
writes one row per 500 of its keys, whose arrays line up key by key; a claim takes rows up to
a batch of notices; the previous version's rows (one per key) are folded in without loss."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from cleanup_worker.adapters.postgres import keys, outbox
from cleanup_worker.adapters.postgres.keys import MembershipSource
from testkit.events import at

ORPHANS = 1203  # two full rows and a third of 203


async def orphan_keys(db: Any, count: int) -> list[str]:
    """`count` keys in our api_keys, each of its own user, none with a membership."""
    rows = await db.fetch(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at) "
        "SELECT gen_random_uuid(), 'acct-' || (i % 7), 'user-' || i, 'sha256:test', $2 "
        "FROM generate_series(1, $1::int) AS i RETURNING id::text",
        count,
        at(0),
    )
    return [row["id"] for row in rows]


async def write_rows(db: Any, sizes: list[int]) -> None:
    """Outbox rows of the given numbers of notices, oldest first."""
    for n in sizes:
        await db.execute(
            "INSERT INTO revocation_outbox_batches (notices, key_ids, account_ids, iam_ids, "
            "reasons, revoked_ats, revoked_bys, event_times) SELECT $1, array_agg(i::text), "
            "array_agg('a'::text), array_agg('u'::text), array_agg('orphaned'::text), "
            "array_agg($2::timestamptz), array_agg('test'::text), array_agg($2::timestamptz) "
            "FROM generate_series(1, $1::int) AS i",
            n,
            at(0),
        )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=1) as made:
        yield made


async def test_a_statement_writes_a_row_per_500_keys_that_line_up(db: Any) -> None:
    """R5 revoking 1 203 keys in one statement writes rows of 500, 500 and 203 notices, and
    every element names its key's own account, user, reason and revoker."""
    ids = await orphan_keys(db, ORPHANS)
    async with db.transaction():
        revoked = await keys.revoke_orphans(
            db, ids, "backfill:run-1", MembershipSource.TABLE, announce=True
        )
    assert sorted(revoked) == sorted(ids)
    sizes = await db.fetch(
        "SELECT cardinality(key_ids) AS n FROM revocation_outbox_batches ORDER BY id"
    )
    assert sorted(row["n"] for row in sizes) == [203, 500, 500]
    owner = {
        row["id"]: (row["account_id"], row["iam_id"], row["revoked_at"])
        for row in await db.fetch("SELECT id::text, account_id, iam_id, revoked_at FROM api_keys")
    }
    async with db.transaction():
        claimed = await outbox.claim(db, 10, 10_000)
    assert not claimed.more
    assert sorted(n.key_id for n in claimed.notices) == sorted(ids)
    for n in claimed.notices:
        assert (n.account_id, n.iam_id, n.revoked_at) == owner[n.key_id]
        assert (n.reason, n.revoked_by) == ("orphaned", "backfill:run-1")


async def test_a_statement_that_revokes_nothing_writes_no_row(db: Any) -> None:
    """No key revoked, no outbox row (not an empty one)."""
    async with db.transaction():
        assert await keys.revoke_for_removals(db, [], announce=True) == 0
        assert (
            await keys.revoke_orphans(
                db,
                ["00000000-0000-0000-0000-000000000000"],
                "backfill:x",
                MembershipSource.TABLE,
                announce=True,
            )
            == []
        )
    assert await db.fetchval("SELECT count(*) FROM revocation_outbox_batches") == 0


async def test_a_claim_takes_rows_up_to_a_batch_of_notices(db: Any) -> None:
    """With rows of 3, 4, 500 and 2 notices and a batch of 5: the first claim takes the rows
    before the fifth notice (7 notices), the next the 500 alone, the last the 2 and says
    nothing is left."""
    await write_rows(db, [3, 4, 500, 2])
    taken = []
    for _ in range(3):
        async with db.transaction():
            claimed = await outbox.claim(db, 10, 5)
            await outbox.delete(db, claimed.row_ids)
        taken.append((len(claimed.notices), claimed.more))
    assert taken == [(7, True), (500, True), (2, False)]
    assert await db.fetchval("SELECT count(*) FROM revocation_outbox_batches") == 0


async def test_a_claim_of_as_many_rows_as_asked_says_more_may_wait(db: Any) -> None:
    """Two rows asked for, two taken: more may wait, though under the batch of notices."""
    await write_rows(db, [1, 1, 1])
    async with db.transaction():
        claimed = await outbox.claim(db, 2, 100)
    assert (len(claimed.notices), claimed.more) == (2, True)


async def test_rows_of_the_previous_version_are_folded_in_order(db: Any, pool: Any) -> None:
    """1 203 rows of migration 0009's outbox become rows of 500, 500 and 203 notices, oldest
    first, with every field kept; the old table ends empty."""
    ids = await orphan_keys(db, ORPHANS)
    await db.executemany(
        "INSERT INTO revocation_outbox (key_id, account_id, iam_id, reason, revoked_at, "
        "revoked_by, event_time) VALUES ($1, 'acct', $2, 'orphaned', $3, 'backfill:old', $3)",
        [(key_id, f"user-{i}", at(i)) for i, key_id in enumerate(ids)],
    )
    assert await outbox.fold_single_rows(pool) == ORPHANS
    assert await db.fetchval("SELECT count(*) FROM revocation_outbox") == 0
    assert (await outbox.backlog(pool)).notices == ORPHANS
    async with db.transaction():
        claimed = await outbox.claim(db, 10, 10_000)
    assert [n.key_id for n in claimed.notices] == ids
    assert [n.iam_id for n in claimed.notices] == [f"user-{i}" for i in range(ORPHANS)]
    assert [n.revoked_at for n in claimed.notices] == [at(i) for i in range(ORPHANS)]
    assert {(n.account_id, n.reason, n.revoked_by) for n in claimed.notices} == {
        ("acct", "orphaned", "backfill:old")
    }


async def test_the_arrays_are_stored_out_of_line_uncompressed(db: Any) -> None:
    """A row's arrays are never compressed (migration 0015): pglz cost the revocation's own
    transaction CPU for rows that live only until the relay has published them."""
    storage = await db.fetch(
        "SELECT attname, attstorage::text FROM pg_attribute "
        "WHERE attrelid = 'revocation_outbox_batches'::regclass AND attname LIKE '%s'"
    )
    arrays = ("key_ids", "account_ids", "iam_ids", "reasons", "revoked_ats", "revoked_bys")
    assert {row["attname"]: row["attstorage"] for row in storage} == {
        **dict.fromkeys((*arrays, "event_times"), "e"),
        "notices": "p",
    }
    await write_rows(db, [500])
    compressed = await db.fetchrow(
        "SELECT pg_column_compression(key_ids) AS ids, pg_column_compression(reasons) AS reasons "
        "FROM revocation_outbox_batches"
    )
    assert (compressed["ids"], compressed["reasons"]) == (None, None)
