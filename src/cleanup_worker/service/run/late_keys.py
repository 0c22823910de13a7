"""The late-key sweep: keys that slip past a removal are revoked within seconds ("R1 re-check" and
"R6 late keys", docs/design.md).

Every `interval` one replica (whoever holds the shared cursor row) runs the R1 re-check
over the live keys that became visible recently, notes R6 candidates, and revokes the R6
candidates whose settle delay has passed once the whole consumer group has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from aiokafka.errors import KafkaError

from cleanup_worker.adapters.kafka.group_progress import GroupProgress
from cleanup_worker.adapters.postgres import keys
from cleanup_worker.adapters.postgres import late_keys as sql
from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.adapters.postgres.keys import RevokedKey
from cleanup_worker.adapters.postgres.late_keys import Cursor, LateKey
from cleanup_worker.adapters.postgres.sqlstate import is_transient
from cleanup_worker.domain.key_table import KeyTableMapping
from cleanup_worker.domain.late_keys import group_has_caught_up, settle_cutoff
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.retries import Reachability, retrying

log = get_logger(__name__)

RULE_RECHECK = "r1_recheck"
RULE_LATE_KEY = "r6_late_key"

# Keys are looked at again a little before the window: a key service that sets created_at
# from its own clock may be behind the database's (CLEANUP_KEYS_CLOCK_SKEW_S; this is its
# default, "Key table mapping" in docs/design.md).
CLOCK_MARGIN = timedelta(seconds=KeyTableMapping().clock_skew_s)
# R6 asks the brokers at most this long per sweep: the next sweep (and its re-check) waits for
# this one, and a broker that does not answer must not hold the re-check back.
GROUP_PROGRESS_TIMEOUT_S = 2.0
# While the group lags far behind (not even the oldest due key may go), asking again every
# sweep only loads the brokers and the worker: R6 waits this long before it asks again.
GROUP_PROGRESS_BACKOFF_S = 2.0


def advance(cursor: Cursor, at: datetime, running: frozenset[str]) -> Cursor:
    """The cursor after a sweep that saw `running` transactions at `at`.

    When none of the probe's transactions runs any more, everything that started before the
    probe has ended: the horizon moves to the probe's time, and the window to the horizon
    the probe saw (keys created before it were visible when the probe was taken, so whatever
    could have hidden them has ended too). Then a new probe is taken. While the probe's
    transactions run, it is kept: replacing it could postpone the horizon for ever.
    """
    probe = cursor.probe_vxids
    if probe is not None and cursor.probe_at is not None and cursor.probe_horizon is not None:
        if running.intersection(probe):
            return replace(cursor, swept_at=at)
        cursor = replace(cursor, window_start=cursor.probe_horizon, horizon=cursor.probe_at)
    return replace(
        cursor,
        probe_at=at,
        probe_horizon=cursor.horizon,
        probe_vxids=tuple(sorted(running)),
        swept_at=at,
    )


@dataclass
class Swept:
    """What one sweep did."""

    rechecked: list[RevokedKey] = field(default_factory=list)
    late: list[RevokedKey] = field(default_factory=list)
    waiting: int = 0


class LateKeySweeper:
    """A companion of the consumer (service/run/process.py): `run` sweeps until `request_stop`."""

    def __init__(
        self,
        pool: Pool,
        *,
        progress: GroupProgress | None,
        settle_s: float,
        interval_s: float,
        retry_max_wait_s: float,
        announce: bool = False,
        on_revoked: Callable[[], None] | None = None,
        database: Reachability | None = None,
        clock_skew_s: float | None = None,
    ) -> None:
        self._pool = pool
        # How far behind the database's clock a key's created time may be (its writer's
        # clock): the re-check and R6's notes look that much before the window. R6's guard
        # takes the created time as it is: its settle delay (30 s by default) is what absorbs
        # a writer's clock behind ours, and should stay above this skew.
        self._skew = CLOCK_MARGIN if clock_skew_s is None else timedelta(seconds=clock_skew_s)
        # After an outage the sweep resumes with the batches, not a backoff later (R1's
        # re-check promises 2 s).
        self._database = database
        self._progress = progress  # None: R6 is off
        self._settle = timedelta(seconds=settle_s)
        self._interval_s = interval_s
        self._retry_max_wait_s = retry_max_wait_s
        self._announce = announce  # notices to the outbox (docs/design.md)
        self._on_revoked = on_revoked  # their notices wait in the outbox: wake the relay
        self._stopping = asyncio.Event()
        self._ask_group_after = 0.0  # time.monotonic() before which R6 does not ask again
        metrics.LATE_KEY_SETTLE.set(settle_s)

    def request_stop(self) -> None:
        """Ends the loop after the sweep in progress (the process cancels it if it is slow:
        its transaction then rolls back and the next sweep does the work)."""
        self._stopping.set()

    async def run(self) -> None:
        log.info("late_keys.started", r6=self._progress is not None, interval_s=self._interval_s)
        while not self._stopping.is_set():
            pause = self._interval_s
            try:
                await self._sweep_retrying()
            except Exception as exc:  # noqa: BLE001 - the consumer must go on; logged, measured
                # Not transient (a bug, a missing grant): try again later, and
                # cleanup_late_key_sweep_behind_seconds shows that the sweep is stuck.
                log.error("late_keys.sweep_failed", error=type(exc).__name__)
                pause = max(pause, self._retry_max_wait_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
        log.info("late_keys.stopped")

    async def _sweep_retrying(self) -> Swept | None:
        async for attempt in retrying(
            "database.late_key_sweep",
            on=is_transient,
            wait_max=self._retry_max_wait_s,
            reachability=self._database,
        ):
            with attempt:
                return await self.sweep()
        raise AssertionError("unreachable: stamina retries forever")  # pragma: no cover

    async def sweep(self) -> Swept | None:
        """One pass; None when another replica swept just now or is sweeping."""
        started = time.perf_counter()
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await sql.lock_cursor(conn)
            if locked is None:
                return None
            cursor, now = locked
            if cursor.swept_at is not None and now - cursor.swept_at < self._min_gap:
                self._report(now, cursor.window_start, cursor.r6_blocked_since, cursor.r6_waiting)
                return None
            at, running = await sql.running_transactions(conn)
            cursor = advance(cursor, at, running)
            since = cursor.window_start - self._skew
            swept = Swept(
                rechecked=await keys.recheck_recent_keys(conn, since, announce=self._announce)
            )
            if self._progress is not None:
                await sql.note_new_keys(conn, since)
            await sql.save_cursor(conn, cursor)
            late = await sql.review_candidates(conn) if self._progress is not None else []
        self._revoked(swept.rechecked, RULE_RECHECK)
        blocked_since = None
        if self._progress is not None:
            blocked_since = await self._late_keys(self._progress, late, cursor, now, swept)
        self._report(now, cursor.window_start, blocked_since, swept.waiting)
        metrics.SWEEP_DURATION.observe(time.perf_counter() - started)
        return swept

    @property
    def _min_gap(self) -> timedelta:
        # Several replicas: whoever comes within most of an interval of the last sweep skips.
        return timedelta(seconds=self._interval_s * 0.8)

    async def _late_keys(
        self,
        progress: GroupProgress,
        late: list[LateKey],
        cursor: Cursor,
        now: datetime,
        swept: Swept,
    ) -> datetime | None:
        """R6: the late keys past their settle delay, once the group has caught up. Returns
        since when R6 has been waiting for the group (None: it is not)."""
        due = [key for key in late if settle_cutoff(key.created_at, self._settle) <= now]
        consumed_before = None
        if due and time.monotonic() >= self._ask_group_after:
            # Not even the oldest cutoff passes (or no answer): the group is well behind.
            self._ask_group_after = time.monotonic() + GROUP_PROGRESS_BACKOFF_S
            try:
                async with asyncio.timeout(GROUP_PROGRESS_TIMEOUT_S):
                    consumed_before = await progress.consumed_before(
                        [settle_cutoff(key.created_at, self._settle) for key in due]
                    )
            except (KafkaError, TimeoutError) as exc:  # unknown progress: wait, never guess
                log.warning("late_keys.group_progress_unknown", error=type(exc).__name__)
            if consumed_before is not None:
                self._ask_group_after = 0.0
        allowed = [
            key.key_id
            for key in due
            if group_has_caught_up(key.created_at, self._settle, consumed_before)
        ]
        swept.waiting = len(due) - len(allowed)
        blocked_since = (cursor.r6_blocked_since or now) if swept.waiting else None
        unchanged = (blocked_since, swept.waiting) == (cursor.r6_blocked_since, cursor.r6_waiting)
        if allowed or not unchanged:
            async with self._pool.acquire() as conn, conn.transaction():
                swept.late = await keys.revoke_late_keys(conn, allowed, announce=self._announce)
                await sql.save_r6_state(conn, blocked_since, swept.waiting)
        self._revoked(swept.late, RULE_LATE_KEY)
        if swept.waiting and cursor.r6_blocked_since is None:  # once, as it starts waiting
            log.info("late_keys.waiting_for_group", keys=swept.waiting)
        return blocked_since

    def _revoked(self, revoked: list[RevokedKey], rule: str) -> None:
        if not revoked:
            return
        if self._on_revoked is not None:
            self._on_revoked()
        reason = keys.REASON_MEMBER_REMOVED if rule == RULE_RECHECK else keys.REASON_ORPHANED
        metrics.KEYS_REVOKED.labels(reason).inc(len(revoked))
        metrics.LATE_KEYS_REVOKED.labels(rule).inc(len(revoked))
        for key in revoked:
            log.info(
                "late_keys.revoked",
                key_id=str(key.key_id),
                account_id=key.account_id,
                iam_id=key.iam_id,
                rule=rule,
                revoked_by=key.revoked_by,
            )

    @staticmethod
    def _report(
        now: datetime, window_start: datetime, blocked_since: datetime | None, waiting: int
    ) -> None:
        metrics.SWEEP_BEHIND.set(max(0.0, (now - window_start).total_seconds()))
        metrics.LATE_KEYS_WAITING.set(waiting)
        blocked = 0.0 if blocked_since is None else (now - blocked_since).total_seconds()
        metrics.LATE_KEYS_BLOCKED.set(max(0.0, blocked))
