"""The invariant, watched: a companion of the worker that assesses, on a schedule, the live
keys whose owner is removed (the backfill's read-only assessment, R5) and exports the count
(docs/operations.md, "The invariant, watched").

One replica watches at a time (it holds a session advisory lock); the others export 0 and try
again at every interval, so that a watcher that goes away is replaced. The cost is capped: the
pause after an assessment is at least `1 / max_busy_fraction` times its duration, so on a key
table where one pass takes 20 s and the cap is 2 %, assessments are 1 000 s apart at least.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress

from cleanup_worker.adapters.postgres import backfill_assessment
from cleanup_worker.adapters.postgres.connections import Connection, Pool
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from cleanup_worker.adapters.postgres.locks import INVARIANT_LOCK_KEY
from cleanup_worker.domain.rules import OrphanReason
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics

log = get_logger(__name__)


FIRST_AFTER_S = 60.0


def pause_after(duration_s: float, interval_s: float, max_busy_fraction: float) -> float:
    """The wait before the next assessment: the interval, stretched to keep the cost cap."""
    return max(interval_s, duration_s / max_busy_fraction)


class InvariantWatch:
    def __init__(self, pool: Pool, *, interval_s: float, max_busy_fraction: float) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._max_busy_fraction = max_busy_fraction
        self._stopping = asyncio.Event()
        self.assessments = 0

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        # Not at once: a pod that restarts (or a benchmark) is not greeted by a full read.
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), min(self._interval_s, FIRST_AFTER_S))
        # The pool has one connection, held for the watch's life: the lock lives in it.
        while not self._stopping.is_set():
            pause = self._interval_s
            try:
                async with self._pool.acquire() as conn:
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", INVARIANT_LOCK_KEY):
                        await self._watch(conn)
                        return
                    metrics.LIVE_KEYS_OF_REMOVED_MEMBERS.set(0)
            except Exception as exc:  # noqa: BLE001 - a lost connection: try again next time
                log.warning("invariant.unavailable", error=type(exc).__name__)
                metrics.LIVE_KEYS_OF_REMOVED_MEMBERS.set(0)
                metrics.INVARIANT_ASSESSED.set(0)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)

    async def _watch(self, conn: Connection) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            found = await backfill_assessment.assess(conn, MembershipSource.TABLE, top=0)
            await conn.execute("DROP TABLE IF EXISTS pg_temp.backfill_candidates")
            took = time.monotonic() - started
            live = found.by_reason.get(OrphanReason.MEMBERSHIP_REMOVED, 0)
            metrics.LIVE_KEYS_OF_REMOVED_MEMBERS.set(live)
            metrics.INVARIANT_ASSESSED.set(time.time())
            metrics.INVARIANT_DURATION.set(took)
            self.assessments += 1
            log.info(
                "invariant.assessed", live_keys_of_removed_members=live, seconds=round(took, 3)
            )
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(),
                    pause_after(took, self._interval_s, self._max_busy_fraction),
                )
