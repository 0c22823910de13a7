"""The backfill's writes: the candidates in keyset batches, each one transaction that
re-checks R5 as it revokes and records the run's checkpoint.

The run's connection reads the candidates (its TEMP table); the batches are written on
`--lanes` connections of their own, side by side, so that PostgreSQL can use more than one
core: a batch waits on index probes of the memberships and on pages all over the key table,
not on this process (docs/performance.md, Backfill). Two, the default, take the backfill
past 0.8x one set-based UPDATE on two cores while the live worker keeps its lag target; one
lane writes on the run's connection, one batch at a time. Each batch's checkpoint still
commits after the one before it, so `--resume` never skips a batch that did not commit, and a
kill at any moment leaves counts that `--resume` completes identically.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, suppress

from cleanup_worker.adapters.postgres import backfill_assessment, backfill_runs, keys
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from cleanup_worker.adapters.postgres.sqlstate import is_lost_race
from cleanup_worker.domain.rules import Assessment, OrphanReason
from cleanup_worker.observability import metrics
from cleanup_worker.retries import retrying
from cleanup_worker.service.backfill.summary import Reporter, Summary

Connect = Callable[[], AbstractAsyncContextManager[Connection]]
Batch = asyncio.Task[Counter[OrphanReason]]

BATCH_ATTEMPTS = 50


class RevocationWalk:
    """One walk over a run's candidates, from a checkpoint to the end or a stop request."""

    def __init__(
        self,
        connect: Connect,
        summary: Summary,
        source: MembershipSource,
        reporter: Reporter,
        stop: asyncio.Event,
        *,
        statement_timeout_ms: int,
        retry_max_wait_s: float,
        announce: bool,
    ) -> None:
        self._connect = connect
        self._summary = summary
        self._source = source
        self._reporter = reporter
        self._stop = stop
        self._statement_timeout_ms = statement_timeout_ms
        self._retry_max_wait_s = retry_max_wait_s
        self._announce = announce
        self._revoked_by = f"backfill:{summary.run_id}"

    async def run(self, conn: Connection, found: Assessment, after: str | None) -> bool:
        """Walks the candidates after `after`; True when all are done, False when stopped.
        Stopping lets the batches in flight commit."""
        options = self._summary.options
        size = options.batch_size
        if options.max_rate:
            size = max(1, min(size, int(options.max_rate)))  # about a batch a second at most
        self._reporter.revoking(found, found.candidates)
        began = time.monotonic()
        # The memberships file is a TEMP table of the run's connection, and a paced run has no
        # use for speed: those write on the run's connection, one batch at a time.
        alone = (
            options.lanes == 1 or self._source is MembershipSource.FILE or bool(options.max_rate)
        )
        async with AsyncExitStack() as stack:
            lanes = [conn] if alone else await self._open_lanes(stack, options.lanes)
            pending: deque[tuple[Batch, int]] = deque()
            launched = 0
            try:
                while not self._stop.is_set():
                    while pending and (alone or len(pending) >= len(lanes)):
                        await self._settle(pending)
                    batch = await backfill_assessment.next_candidates(conn, after, size)
                    if not batch:
                        break
                    after = next(reversed(batch))
                    lane = lanes[launched % len(lanes)]  # free: its last batch was awaited
                    launched += 1
                    previous = pending[-1][0] if pending else None
                    task = asyncio.create_task(self._batch(lane, batch, previous))
                    pending.append((task, len(batch)))
                    if options.max_rate:
                        await self._settle(pending)
                        await self._pace(began + self._summary.examined / options.max_rate)
                while pending:
                    await self._settle(pending)
            finally:
                for task, _ in pending:
                    task.cancel()
                await asyncio.gather(*(task for task, _ in pending), return_exceptions=True)
        if self._stop.is_set():
            return False
        return not await backfill_assessment.next_candidates(conn, after, 1)

    async def _open_lanes(self, stack: AsyncExitStack, count: int) -> list[Connection]:
        lanes = []
        for _ in range(count):
            lane = await stack.enter_async_context(self._connect())
            await backfill_runs.configure_session(lane, self._statement_timeout_ms)
            lanes.append(lane)
        return lanes

    async def _settle(self, pending: deque[tuple[Batch, int]]) -> None:
        """Waits for the oldest batch and counts it: batches are counted in read order."""
        task, examined = pending[0]
        revoked = await task
        pending.popleft()
        summary = self._summary
        count = sum(revoked.values())
        summary.examined += examined
        summary.revoked_now += count
        summary.batches += 1
        for reason, n in revoked.items():
            summary.revoked[reason] = summary.revoked.get(reason, 0) + n
        metrics.BACKFILL_REVOKED.inc(count)
        metrics.KEYS_REVOKED.labels(keys.REASON_ORPHANED).inc(count)
        self._reporter.advanced(examined, count)

    async def _batch(
        self, conn: Connection, batch: dict[str, OrphanReason], previous: Batch | None
    ) -> Counter[OrphanReason]:
        """Revokes what is still orphaned of `batch` and records the checkpoint, atomically,
        once the batch before it (`previous`) has committed its own.

        The counts by R5 case use the case the assessment found for each key.
        """
        last = next(reversed(batch))
        # Lock timeouts (backfill_runs.yield_to_others) and deadlocks are retried: the batch
        # rolled back and released its own locks. A run racing the worker for the same keys
        # (keys of members removed again while it runs) gives up often and briefly, so it
        # has many attempts, each after a short wait.
        async for attempt in retrying(
            "database.backfill_batch",
            on=is_lost_race,
            attempts=BATCH_ATTEMPTS,
            wait_max=self._retry_max_wait_s,
        ):
            with attempt:
                began = time.perf_counter()
                async with conn.transaction():
                    await backfill_runs.yield_to_others(conn)
                    revoked_ids = await keys.revoke_orphans(
                        conn, list(batch), self._revoked_by, self._source, announce=self._announce
                    )
                    revoked = Counter(batch[key] for key in revoked_ids)
                    if previous is not None:
                        # Checkpoints commit in read order; a failure of the batch before
                        # rolls this one back too.
                        await asyncio.shield(previous)
                    await backfill_runs.record_batch(
                        conn, self._summary.run_id, last, len(batch), revoked
                    )
                took = time.perf_counter() - began
        summary = self._summary
        summary.longest_transaction_s = max(summary.longest_transaction_s, took)
        return revoked

    async def _pace(self, due: float) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
