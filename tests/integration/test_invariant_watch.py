"""The invariant, watched: the worker's companion assesses the live keys of removed members
and exports the count; with two replicas, one watches and the other exports 0."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup_worker.adapters.postgres import connections as postgres
from cleanup_worker.observability import metrics
from cleanup_worker.service.run.invariant import InvariantWatch
from cleanup_worker.settings import Settings
from testkit.database import seed_key
from testkit.metrics import sample
from testkit.processes import running_worker
from testkit.waiting import eventually


async def test_watch_exports_the_live_keys_of_removed_members(settings: Settings, db: Any) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    await db.execute(
        "INSERT INTO account_memberships VALUES ('acct', 'gone', 'removed', NULL, $1), "
        "('acct', 'here', 'active', $1, $1)",
        old,
    )
    for iam_id in ("gone", "gone", "gone", "here"):
        await seed_key(db, "acct", iam_id, old - timedelta(days=1))
    metrics.INVARIANT_ASSESSED.set(0)
    settings = settings.model_copy(update={"invariant_interval_s": 0.5})
    async with running_worker(settings):

        async def assessed() -> bool:
            return sample("cleanup_invariant_assessed_timestamp_seconds") > 0

        await eventually(assessed, timeout=30)
        assert sample("cleanup_live_keys_of_removed_members") == 3
        assert sample("cleanup_invariant_assessment_seconds") > 0


async def test_one_replica_watches_at_a_time(settings: Settings, db: Any) -> None:
    """A second watch on the same database finds the lock held and assesses nothing."""
    first_pool = await postgres.create_pool(settings, max_size=1)
    second_pool = await postgres.create_pool(settings, max_size=1)
    first = InvariantWatch(first_pool, interval_s=0.2, max_busy_fraction=1)
    second = InvariantWatch(second_pool, interval_s=0.2, max_busy_fraction=1)
    tasks = [asyncio.create_task(first.run())]
    try:

        async def watching() -> bool:
            return first.assessments >= 1

        await eventually(watching, timeout=10)
        tasks.append(asyncio.create_task(second.run()))

        async def repeated() -> bool:
            return first.assessments >= 4

        await eventually(repeated, timeout=10)
        assert second.assessments == 0
    finally:
        first.request_stop()
        second.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await first_pool.close()
        await second_pool.close()
