"""The batch statements stay index lookups however large the tables grow after the worker
prepared them: a batch costs what the batch holds, not what the tables hold.

asyncpg prepares every statement once per connection, and PostgreSQL may keep a generic plan
made when the tables were new and empty (it then assumes ten pages). These tests make such a
plan, grow the tables, and look at the plan a batch would run.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from cleanup_worker.adapters.postgres import key_table, keys, memberships
from cleanup_worker.adapters.postgres.connections import BATCH_PLANNER
from cleanup_worker.adapters.postgres.json_rows import json_rows

T = datetime(2026, 1, 1, tzinfo=UTC)
MEMBERS = 30
BIG_TABLES = {
    "api_keys", "membership_events", "account_memberships", "membership_baselines", "member_locks",
}  # fmt: skip


async def _grow_tables(db: Any) -> None:
    await db.execute(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at) "
        "SELECT gen_random_uuid(), 'a' || (g % 100), 'u' || g, 'h', $1 "
        "FROM generate_series(1, 60000) AS g",
        T,
    )
    await db.execute(
        "INSERT INTO membership_events (source, event_id, account_id, iam_id, change, "
        "event_time, event_type) SELECT '/s', 'e' || g, 'a' || (g % 100), 'u' || g, 'removed', "
        "$1, 't' FROM generate_series(1, 60000) AS g",
        T,
    )
    await db.execute(
        "INSERT INTO account_memberships SELECT 'a' || (g % 100), 'u' || g, 'removed', NULL, $1 "
        "FROM generate_series(1, 60000) AS g",
        T,
    )
    await db.execute(
        "INSERT INTO member_locks SELECT 'a' || (g % 100), 'u' || g "
        "FROM generate_series(1, 60000) AS g"
    )
    await db.execute(
        "INSERT INTO membership_baselines (account_id, iam_id, state, changed_at) "
        "SELECT 'a' || (g % 100), 'u' || g, 'removed', $1 FROM generate_series(1, 60000) AS g",
        T,
    )


def _literal(value: Any) -> str:
    """An SQL literal for EXECUTE, which takes no bind parameters (test values only)."""
    if isinstance(value, list):
        items = ",".join("NULL" if v is None else f'"{_text(v)}"' for v in value)
        return f"'{{{items}}}'"
    return f"'{_text(value)}'"


def _text(value: Any) -> str:
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return text.replace("'", "''")


def _scans(plan: Any) -> list[tuple[str, str]]:
    found = []
    if isinstance(plan, dict):
        if plan.get("Node Type") == "Seq Scan":
            found.append(("seq scan", plan.get("Relation Name", "")))
        if plan.get("Node Type") == "Hash" or plan.get("Subplan Name", "").startswith("hashed"):
            found.append(("hash", plan.get("Relation Name", "") or plan.get("Subplan Name", "")))
        for value in plan.values():
            found.extend(_scans(value))
    elif isinstance(plan, list):
        for item in plan:
            found.extend(_scans(item))
    return found


def _big_table_scans(plan: Any) -> list[tuple[str, str]]:
    return [(kind, name) for kind, name in _scans(plan) if kind == "hash" or name in BIG_TABLES]


accounts = [f"a{i}" for i in range(MEMBERS)]
iam_ids = [f"new{i}" for i in range(MEMBERS)]
ledger_rows = json.dumps(
    [
        {"source": "/s", "event_id": f"n{i}", "account_id": a, "iam_id": u, "change": "removed",
         "event_time": T.isoformat(), "event_type": "t", "kafka_topic": None,
         "kafka_partition": None, "kafka_offset": None}
        for i, (a, u) in enumerate(zip(accounts, iam_ids, strict=True))
    ]
)  # fmt: skip

removals = json_rows(
    {"account_id": a, "iam_id": u, "removed_at": T, "revoked_by": "event:/s#x"}
    for a, u in zip(accounts, iam_ids, strict=True)
)

STATEMENTS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "ensure member locks": (memberships._ENSURE_MEMBER_LOCKS, (accounts, iam_ids)),
    "lock members": (memberships._LOCK_MEMBERS, (accounts, iam_ids)),
    "capture baselines, record events": (
        memberships._CAPTURE_AND_RECORD,
        (accounts, iam_ids, ledger_rows),
    ),
    "revoke for removals": (
        keys.r1_statement(key_table.DEFAULT, announce=False, note_late_keys=False),
        (removals,),
    ),
    "revoke for removals, announced, late keys noted": (
        keys.r1_statement(key_table.DEFAULT, announce=True, note_late_keys=True),
        (removals,),
    ),
    "load history": (memberships._HISTORY, (accounts, iam_ids)),
    "load baselines": (memberships._BASELINES, (accounts, iam_ids)),
    "write memberships": (
        memberships._UPSERT_MEMBERSHIPS,
        (
            json_rows(
                {"account_id": a, "iam_id": u, "state": "removed", "changed_at": T}
                for a, u in zip(accounts, iam_ids, strict=True)
            ),
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_batch_statement_keeps_to_indexes_as_tables_grow(db: Any, name: str) -> None:
    """A plan made on new, empty tables still reads them through their indexes once large."""
    sql, args = STATEMENTS[name]
    placeholders = ", ".join(_literal(arg) for arg in args)
    async with db.transaction():
        for name, value in BATCH_PLANNER.items():  # as the batch pools' sessions have them
            await db.execute(f"SET LOCAL {name} = {value}")
        await db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await db.execute(f"PREPARE batch_statement AS {sql}")
        await db.execute(f"EXECUTE batch_statement({placeholders})")
        await _grow_tables(db)
        raw = await db.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE batch_statement({placeholders})")
        await db.execute("DEALLOCATE batch_statement")
    plan = json.loads(raw) if isinstance(raw, str) else raw
    assert _big_table_scans(plan) == []


async def test_member_locks_scale_to_many_large_concurrent_batches(
    database_url: str, db: Any
) -> None:
    """A dozen concurrent batches of 2000 members each take their member locks without
    exhausting PostgreSQL's shared lock table (row locks, not one advisory lock a member),
    and hold all of them together."""
    batches, size = 12, 2000
    members = {n: sorted((f"acct-{n}", f"user-{i}") for i in range(size)) for n in range(batches)}
    # The rows exist (an earlier batch made them), so every lock is a row lock taken by
    # `FOR UPDATE`: the case that would fill the lock table if locks were kept there.
    rows = [member for batch in members.values() for member in batch]
    await db.executemany("INSERT INTO member_locks VALUES ($1, $2)", rows)
    locked = {n: asyncio.Event() for n in range(batches)}
    release = asyncio.Event()

    async def batch(n: int) -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await memberships.lock_members(conn, members[n])
                locked[n].set()
                await release.wait()
        finally:
            await conn.close()

    tasks = [asyncio.create_task(batch(n)) for n in range(batches)]
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(event.wait() for event in locked.values()))
        # Every batch's transaction is open at once, and not one of their rows can be taken
        # by anyone else: the 24 000 locks are held together.
        holders = await db.fetchval(
            "SELECT count(DISTINCT l.pid) FROM pg_locks AS l "
            "JOIN pg_class AS c ON c.oid = l.relation "
            "WHERE c.relname = 'member_locks' AND l.mode = 'RowShareLock' AND l.granted "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert holders == batches
        free = await db.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM member_locks FOR UPDATE SKIP LOCKED) AS free"
        )
        assert free == 0, f"{free} of {batches * size} member rows were not locked"
    finally:
        release.set()
        await asyncio.gather(*tasks)
