"""`cleanup-worker backfill`: finds the keys R5 orphans and, with `--execute`, revokes them.

One dedicated connection, opened as bootstrap/ says, carries the whole run: it holds the
session advisory lock (one backfill at a time) and the TEMP tables (the memberships file, the
candidates); the batches' short transactions run on two more, side by side, checkpoints in
order (walk.py). The steps:

1. lock; load `--memberships FILE.csv` if given (validated while it streams, before any write);
2. open a run record (new, or the interrupted run that `--resume` continues);
3. assess: one read-only pass finds the orphaned keys in scope (`backfill_assessment.assess`);
4. dry run: report and stop. Otherwise the safety valves decide whether to go on;
5. revoke in keyset batches of candidate ids, each one transaction that re-checks R5 and
   records the checkpoint, so a kill at any moment loses nothing that `--resume` cannot
   finish identically.

SIGTERM (or SIGINT) lets the current batch commit, records the run as `stopped`, and returns.

A lost connection (a network fault, a PostgreSQL restart) takes the lock and the TEMP tables
with it, but not the checkpoint: the run reconnects and goes on as `--resume` would, from
the last committed batch (a dry run starts again), until the database cannot be reached for
the connect timeout.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import replace

from cleanup_worker.adapters import membership_file
from cleanup_worker.adapters.postgres import backfill_assessment, backfill_runs
from cleanup_worker.adapters.postgres.backfill_runs import RunRecord
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from cleanup_worker.adapters.postgres.sqlstate import is_unreachable
from cleanup_worker.errors import AlreadyRunning
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.retries import retrying
from cleanup_worker.service.backfill import record as backfill_record
from cleanup_worker.service.backfill.options import (
    BackfillRequest,
    refusal,
)
from cleanup_worker.service.backfill.summary import (
    TOP,
    BackfillRefused,
    QuietReporter,
    Reporter,
    Summary,
    assessment_fields,
)
from cleanup_worker.service.backfill.walk import RevocationWalk

log = get_logger(__name__)

# Opens the run's one connection (waiting for a database that is starting), and closes it.
Connect = Callable[[], AbstractAsyncContextManager[Connection]]


class Backfill:
    """One run of the backfill, from lock to summary. `request_stop` may come at any time."""

    def __init__(
        self,
        connect: Connect,
        request: BackfillRequest,
        reporter: Reporter | None = None,
        *,
        statement_timeout_ms: int,
        retry_max_wait_s: float,
        announce: bool,
    ) -> None:
        self._connect = connect
        self._statement_timeout_ms = statement_timeout_ms
        self._retry_max_wait_s = retry_max_wait_s
        self._announce = announce
        self.request = request
        self.reporter: Reporter = reporter or QuietReporter()
        self._stop = asyncio.Event()
        self._summary: Summary | None = None  # of the run, once its record exists

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("backfill.stop_requested")
        self._stop.set()

    async def run(self) -> Summary:
        started = time.monotonic()
        async for attempt in retrying(
            "database.backfill",
            on=self._reconnect_after,
            wait_max=self._retry_max_wait_s,
        ):
            with attempt:
                return await self._connected(started)
        raise AssertionError("unreachable: stamina retries until it returns or raises")

    def _reconnect_after(self, exc: Exception) -> bool:
        """A lost connection is worth a new one, unless the operator asked us to stop; the
        run then continues where its last batch committed."""
        if not is_unreachable(exc) or self._stop.is_set():
            return False
        if self._summary is not None and self._summary.execute:
            self.request = replace(self.request, resume=True)
        return True

    async def _connected(self, started: float) -> Summary:
        """The run on one connection, from the lock to the summary."""
        async with self._connect() as conn:
            await backfill_runs.configure_session(conn, self._statement_timeout_ms)
            if not await backfill_runs.try_lock(conn):
                pid = await backfill_runs.lock_holder(conn)
                holder = f" (PostgreSQL backend pid {pid})" if pid else ""
                raise AlreadyRunning(
                    f"another backfill is running{holder}; only one runs at a time"
                )
            await backfill_runs.mark_interrupted(conn)
            before = self._summary
            if before is not None and await backfill_record.completed_meanwhile(conn, before):
                before.status, before.duration_s = "completed", time.monotonic() - started
                self.reporter.finished()
                log.info("backfill.completed", run_id=str(before.run_id))
                return before
            file = None
            if self.request.memberships is not None:
                file = await membership_file.load(conn, self.request.memberships)
            summary, prior = await backfill_record.open_run(conn, self.request, file)
            if self._summary is not None and self._summary.run_id == summary.run_id:
                summary.continues(self._summary)
            self._summary = summary
            try:
                await self._run(conn, summary, prior, started)
            except BackfillRefused:
                raise
            except Exception as exc:
                with suppress(Exception):  # the connection itself may be what failed
                    await backfill_runs.finish_run(
                        conn, summary.run_id, "failed", type(exc).__name__
                    )
                raise
            return summary

    async def _run(
        self, conn: Connection, summary: Summary, prior: RunRecord | None, started: float
    ) -> None:
        source = MembershipSource.FILE if summary.options.memberships else MembershipSource.TABLE
        log.info(
            "backfill.started",
            run_id=str(summary.run_id),
            mode=summary.mode,
            resumed=summary.resumed,
            source=source.value,
            accounts=len(summary.options.accounts),
        )
        self.reporter.assessing()
        assessed = time.monotonic()
        found = await backfill_assessment.assess(
            conn,
            source,
            accounts=summary.options.accounts or None,
            after=prior.checkpoint_key_id if prior else None,
            top=TOP,
        )
        summary.assessment, summary.assessment_s = found, time.monotonic() - assessed
        metrics.BACKFILL_SCANNED.inc(found.keys_scanned)
        await backfill_runs.record_assessment(
            conn, summary.run_id, found.keys_scanned, found.candidates
        )
        seconds = round(summary.assessment_s, 3)
        log.info(
            "backfill.assessed",
            run_id=str(summary.run_id),
            seconds=seconds,
            **assessment_fields(found),
        )
        summary.refusal = refusal(
            found, summary.options, already_revoked=prior.keys_revoked if prior else 0
        )
        if not summary.execute:
            detail = summary.refusal and f"--execute would be refused: {summary.refusal}"
            await self._finish(conn, summary, "completed", started, detail)
            return
        if summary.refusal:
            await self._finish(conn, summary, "refused", started, summary.refusal)
            log.warning("backfill.refused", run_id=str(summary.run_id), reason=summary.refusal)
            raise BackfillRefused(
                f"refused by a safety valve: {summary.refusal}; nothing "
                f"{'more ' if summary.resumed else ''}was revoked (run {summary.run_id})",
                summary,
            )
        after = prior.checkpoint_key_id if prior else None
        walk = RevocationWalk(
            self._connect,
            summary,
            source,
            self.reporter,
            self._stop,
            statement_timeout_ms=self._statement_timeout_ms,
            retry_max_wait_s=self._retry_max_wait_s,
            announce=self._announce,
        )
        done = await walk.run(conn, found, after)
        await self._finish(conn, summary, "completed" if done else "stopped", started)

    async def _finish(
        self,
        conn: Connection,
        summary: Summary,
        status: str,
        started: float,
        detail: str | None = None,
    ) -> None:
        summary.status = status
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = on")  # durable, with all before
            await backfill_runs.finish_run(conn, summary.run_id, status, detail)
        summary.duration_s = time.monotonic() - started
        self.reporter.finished()
        log.info(
            f"backfill.{status}",
            run_id=str(summary.run_id),
            mode=summary.mode,
            revoked=summary.revoked_now,
            examined=summary.examined,
            batches=summary.batches,
            seconds=round(summary.duration_s, 3),
            longest_transaction_ms=round(summary.longest_transaction_s * 1000, 1),
        )


async def run_until_signalled(backfill: Backfill) -> Summary:
    """Runs a backfill to its end; SIGTERM/SIGINT stop it after the current batch (exit 0)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, backfill.request_stop)
    try:
        return await backfill.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
