"""The backfill while `cleanup-worker run` consumes removals: they share keys and must agree."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest

from cleanup_worker.bootstrap import backfill_job
from cleanup_worker.domain.events import MembershipEvent
from cleanup_worker.service.backfill.options import BackfillRequest
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, lock_waiters, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import publisher
from testkit.key_tables import account, member, over_key_tables
from testkit.processes import running_worker
from testkit.waiting import eventually

USERS = 12  # per group
KEYS = 3  # per user, created at minutes 0, 1, 2


async def group(
    db: Any, name: str, state: str | None, since_minute: int | None = None
) -> dict[str, list[Any]]:
    """USERS users named `name-i` with KEYS keys each, and a membership row unless None."""
    users: dict[str, list[Any]] = {}
    for i in range(USERS):
        account, user = member("acct", f"{name}-{i}")
        if state is not None:
            await db.execute(
                "INSERT INTO account_memberships (account_id, iam_id, state, member_since, "
                "changed_at) VALUES ($1, $2, $3, $4, $5)",
                account,
                user,
                state,
                None if since_minute is None else at(since_minute),
                at(0),
            )
        users[user] = [await seed_key(db, account, user, at(minute)) for minute in range(KEYS)]
    return users


@pytest.mark.timeout(180)
@over_key_tables
async def test_backfill_alongside_the_worker_ends_in_the_right_state(
    settings: Settings, db: Any
) -> None:
    """Each key ends revoked once, by the backfill or by its removal event, or not at all."""
    orphans = {
        **await group(db, "no-row", None),
        **await group(db, "removed", "removed"),
        **await group(db, "earlier", "active", since_minute=10),
    }
    removed_by_event = await group(db, "leaving", "active")
    contested = await group(db, "gone", "removed")  # orphaned, and a removal event arrives
    survivors = {**await group(db, "staying", "active"), **await group(db, "since", "active", 0)}
    removals: dict[str, MembershipEvent] = {
        user: event("removed", account("acct"), user, at(5))
        for user in {**removed_by_event, **contested}
    }

    request = BackfillRequest(execute=True, batch_size=4, max_rate=150, max_fraction=1.0)
    async with publisher(settings) as pub, running_worker(settings):
        backfill = asyncio.create_task(backfill_job(settings, request).run())
        for removal in removals.values():
            await pub.events([removal])
            await asyncio.sleep(0.02)
        summary = await backfill

        async def all_applied() -> bool:
            return await ledger_size(db) == len(removals)

        await eventually(all_applied, timeout=60)

    by_backfill = ("orphaned", f"backfill:{summary.run_id}")
    revoked = await revoked_keys(db)
    for keys in orphans.values():
        assert all(revoked[key] == by_backfill for key in keys)
    for user, keys in removed_by_event.items():
        assert all(revoked[key] == ("member_removed", removals[user].ref) for key in keys)
    for user, keys in contested.items():
        by_event = ("member_removed", removals[user].ref)
        assert all(revoked[key] in (by_backfill, by_event) for key in keys)
    assert not {key for keys in survivors.values() for key in keys} & set(revoked)
    assert summary.keys_revoked == sum(1 for who in revoked.values() if who == by_backfill)


@pytest.mark.timeout(60)
async def test_a_batch_gives_way_to_a_row_lock_before_a_deadlock_can_form(
    settings: Settings, db: Any
) -> None:
    """A batch that meets a key another transaction holds (as the worker's R1 does) rolls
    back within its short lock timeout, so that transaction gets the batch's keys at once,
    not after PostgreSQL's deadlock check (1 s); the batch then revokes them all."""
    # Ids in insertion order, so that any plan locks the held key last of the batch.
    ids = [uuid.UUID(int=i) for i in range(1, 21)]
    await db.execute(  # users without a membership row: every key orphaned
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at) "
        "SELECT id, 'acct', 'lone-' || n, 'sha256:test', $2 "
        "FROM unnest($1::uuid[]) WITH ORDINALITY AS k (id, n) ORDER BY n",
        ids,
        at(0),
    )
    await group(db, "keeper", "active")  # members that keep their keys, as in any account
    held, others = ids[-1], ids[:-1]
    worker = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        async with worker.transaction():
            await worker.execute("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE", held)
            request = BackfillRequest(execute=True, batch_size=len(ids), max_fraction=1.0)
            backfill = asyncio.create_task(backfill_job(settings, request).run())

            async def batch_waits_for_the_held_key() -> bool:
                return bool(await lock_waiters(db, "api_keys"))

            await eventually(batch_waits_for_the_held_key, timeout=20, interval=0.002)
            began = time.perf_counter()
            await worker.execute(
                "SELECT 1 FROM api_keys WHERE id = ANY($1::uuid[]) FOR UPDATE", others
            )
            waited = time.perf_counter() - began
    finally:
        await worker.close()
    summary = await backfill
    assert waited < 0.5, f"waited {waited:.3f} s for the batch's locks"
    revoked = await revoked_keys(db)
    assert all(revoked[key_id][0] == "orphaned" for key_id in ids)
    assert summary.keys_revoked == len(ids)
