"""The notice relay ("The outbox", docs/design.md): publishes the outbox's revocation notices and
deletes each row only once the broker acknowledged its notice.

A batch of rows is claimed (FOR UPDATE SKIP LOCKED, so replicas share the outbox), published
with the idempotent producer, and deleted, in one transaction: a crash or an outage anywhere
in between leaves the rows for the next attempt, so a notice is delivered at least once and
never lost; it is never sent for a revocation that rolled back, because such a revocation
wrote no row. The relay runs beside the consumer and never holds it back: readiness stays
about consuming, and the relay's own health is `cleanup_relay_up`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress

from aiokafka.errors import KafkaError

from cleanup_worker.adapters.cloudevents import notices
from cleanup_worker.adapters.kafka.batches import send_keyed
from cleanup_worker.adapters.kafka.clients import Producer
from cleanup_worker.adapters.postgres import outbox
from cleanup_worker.adapters.postgres.connections import Connection, Pool
from cleanup_worker.adapters.postgres.sqlstate import is_transient
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.retries import Reachability, retrying

log = get_logger(__name__)


def _worth_retrying(exc: Exception) -> bool:
    return isinstance(exc, KafkaError | TimeoutError) or is_transient(exc)


class NoticeRelay:
    """Publishes the outbox until asked to stop. `wake()` after a commit that revoked keys
    makes it look at once; otherwise it looks every `poll_s` (rows of other replicas, of the
    backfill, or left by a crash). On a stop it publishes what the outbox still holds."""

    def __init__(
        self,
        pool: Pool,
        producer: Producer,
        *,
        topic: str,
        event_type: str,
        source: str,
        batch_size: int,
        retry_max_wait_s: float,
        poll_s: float = 0.5,
        publish_timeout_s: float = 30.0,
        backlog_every_s: float = 5.0,
        database: Reachability | None = None,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._topic = topic
        self._event_type = event_type
        self._source = source
        self._batch_size = batch_size
        self._retry_max_wait_s = retry_max_wait_s
        self._poll_s = poll_s
        self._publish_timeout_s = publish_timeout_s
        self._backlog_every_s = backlog_every_s
        self._database = database
        self._conn: Connection | None = None
        self._busy: Callable[[], bool] = lambda: False
        self._defer_s = 0.0
        self._held = AsyncExitStack()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._claim_rows = batch_size
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    def defer_to(self, busy: Callable[[], bool], *, at_most_s: float = 1.0) -> None:
        """Revocations first: while `busy()` (the consumer catching up on a backlog), the relay
        publishes one batch every `at_most_s` instead of back to back. The worker's process
        has one core for both, and a removal's five notices cost about twice its own Python
        (docs/performance.md). Meanwhile the notices wait, durably, in the outbox; they follow
        at full speed once the consumer has caught up. At a steady rate it is not busy, and
        the relay publishes at once after each commit."""
        self._busy = busy
        self._defer_s = at_most_s

    def request_stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Publishes until asked to stop, then drains the outbox (`_drain`)."""
        measuring = asyncio.create_task(self._measure_backlog())
        try:
            while not self._stopping.is_set():
                if not await self._publish_retrying():
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_s)
                    self._wake.clear()
                else:
                    await self._defer()
            await self._drain()
        finally:
            measuring.cancel()
            with suppress(asyncio.CancelledError):
                await measuring
            await self._drop_connection()

    async def _drain(self) -> None:
        """The last look, on a stop. By now the consumer and the late-key sweep have stopped
        (service/run/process.py stops them first), so the outbox holds their last
        revocations: announce them now rather than when the next replica starts. One try per
        batch and no retries: with a service down, what is left waits in the outbox, as after
        a crash; the process bounds the whole drain."""
        try:
            while await self.publish_batch():
                pass
        except Exception as exc:  # noqa: BLE001 - left for the next relay; said once
            log.warning("relay.drain_incomplete", error=type(exc).__name__)

    async def _defer(self) -> None:
        """Waits while the consumer is busy, `defer_to`'s bound at most."""
        deadline = time.monotonic() + self._defer_s
        while self._busy() and not self._stopping.is_set() and time.monotonic() < deadline:
            # The consumer sets no event when it has caught up: looked at 20 times a second.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.05)

    async def _publish_retrying(self) -> bool:
        # After an outage the notices must follow the revocations within a second: the wait
        # for an unreachable database is its probe's, and a refusing broker is asked again
        # at least every second (one loop per replica, so that stays gentle).
        async for attempt in retrying(
            "kafka.notices.publish",
            on=_worth_retrying,
            wait_max=min(self._retry_max_wait_s, 1.0),
            reachability=self._database,
        ):
            with attempt:
                if self._stopping.is_set():
                    return False
                try:
                    more = await self.publish_batch()
                except Exception:
                    metrics.RELAY_UP.set(0)
                    raise
                metrics.RELAY_UP.set(1)
        return more

    async def _connection(self) -> Connection:
        # Kept from one batch to the next: a pooled connection is reset when given back (one
        # more round trip, of four statements, per batch).
        if self._conn is None:
            held = AsyncExitStack()
            conn = await held.enter_async_context(self._pool.acquire())
            try:
                # Only the relay's own commits, which delete acknowledged rows: one lost in a
                # crash of the server brings its rows back, announced once more (at least
                # once, as after any crash); nothing is lost, and the relay never waits for
                # the WAL flush the consumer's commits are queued on.
                await conn.execute("SET synchronous_commit = off")
            except BaseException:
                await held.aclose()
                raise
            self._conn, self._held = conn, held
        return self._conn

    async def _drop_connection(self) -> None:
        """Gives the kept connection back to the pool (which closes a broken one)."""
        self._conn = None
        with suppress(Exception):
            await self._held.aclose()

    async def publish_batch(self) -> bool:
        """Claims, publishes and deletes one batch of notices; returns whether more may wait."""
        conn = await self._connection()
        try:
            async with conn.transaction():
                claimed = await outbox.claim(conn, self._claim_rows, self._batch_size)
                if not claimed.row_ids:
                    return False
                records = [
                    (
                        notices.key(pending),
                        notices.value(pending, event_type=self._event_type, source=self._source),
                    )
                    for pending in claimed.notices
                ]
                sent = await send_keyed(self._producer, self._topic, records, notices.HEADERS)
                # Bounded: a broker that does not answer must not hold the rows (and their
                # locks) for ever; they go back to the outbox and are tried again.
                async with asyncio.timeout(self._publish_timeout_s):
                    await asyncio.gather(*sent)
                acknowledged = time.time()
                await outbox.delete(conn, claimed.row_ids)
        except BaseException:
            # After an error the connection may be broken or mid-transaction: a fresh one.
            await self._drop_connection()
            raise
        published = len(claimed.notices)
        # Next time, lock about as many rows as hold a batch of notices like these: a row
        # holds one statement's notices, five after a steady commit, 500 in a backfill's.
        self._claim_rows = max(
            1, min(self._batch_size, -(-self._batch_size * len(claimed.row_ids) // published))
        )
        self.published += published
        metrics.NOTICES_PUBLISHED.inc(published)
        for pending in claimed.notices:
            metrics.NOTICE_LAG.observe(max(0.0, acknowledged - pending.event_time.timestamp()))
        return claimed.more

    async def _measure_backlog(self) -> None:
        while True:
            with suppress(Exception):  # a gauge that cannot be read now is read next time
                await outbox.fold_single_rows(self._pool)
                found = await outbox.backlog(self._pool)
                metrics.OUTBOX_BACKLOG.set(found.notices)
                age = 0.0 if found.oldest is None else time.time() - found.oldest.timestamp()
                metrics.OUTBOX_OLDEST_AGE.set(max(0.0, age))
            await asyncio.sleep(self._backlog_every_s)
