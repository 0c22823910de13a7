"""`cleanup-worker run`: the consumer-group member with an explicit lifecycle.

fetch (getmany) -> parse -> BatchHandler.apply (one transaction) -> commit offsets of the
partitions still owned. An offset is committed only after the transaction that applied it,
and every batch before it, committed; the commit itself is sent in the background
(committer.py), so the next batch does not wait for the broker's answer.

The offset committed is the consumer's position after the fetch, past transaction markers
(positions.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from cleanup_worker.adapters.kafka.clients import GroupConsumer, Record
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.observability.health import Health
from cleanup_worker.retries import retrying
from cleanup_worker.service.apply.handler import BatchHandler, BatchOutcome, ParsedBatch
from cleanup_worker.service.run.committer import OffsetCommitter
from cleanup_worker.service.run.flow import FlowRate
from cleanup_worker.service.run.positions import CommitPositions

log = get_logger(__name__)


class _DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the in-flight batches finish and commit before their partitions move (bounded)."""

    def __init__(self, consumer_loop: ConsumerLoop) -> None:
        self._loop = consumer_loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._loop.drain_in_flight()
        self._loop.positions.forget(revoked)
        self._loop.health.partitions_revoked()
        log.info("kafka.partitions.revoked", partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._loop.positions.learn(self._loop.consumer, assigned)
        self._loop.health.partitions_assigned(len(self._loop.consumer.assignment()))
        log.info("kafka.partitions.assigned", partitions=len(assigned))


@dataclass
class _InFlight:
    applying: asyncio.Future[BatchOutcome]
    offsets: dict[TopicPartition, int]
    records: int
    started: float


@dataclass(frozen=True, slots=True)
class _Fetch:
    offsets: dict[TopicPartition, int]  # to commit once this fetch's records are applied
    records: int


class ConsumerLoop:
    """Consumes until asked to stop, then drains: finish the batches, commit, leave the group.

    Up to `max_in_flight` batch transactions run at once (each on its own connection), so
    the database can use more than one core and, at a trickle, records that arrive while a
    batch commits start their own at once instead of waiting for it; their offsets are
    committed strictly in fetch order. Running them side by side is safe because the effects
    do not depend on order, and the member locks serialise batches that touch the same member.
    """

    def __init__(
        self,
        *,
        consumer: GroupConsumer,
        handler: BatchHandler,
        health: Health,
        topics: list[str],
        max_records: int,
        wait_ms: int,
        max_in_flight: int,
        rebalance_drain_s: float,
        retry_max_wait_s: float,
        new_consumer: Callable[[], GroupConsumer] | None = None,
    ) -> None:
        self.consumer = consumer
        self._new_consumer = new_consumer
        self.health = health
        self._handler = handler
        self._topics = topics
        self._max_records = max_records
        self._wait_ms = wait_ms
        self._max_in_flight = max_in_flight
        self._rebalance_drain_s = rebalance_drain_s
        self._retry_max_wait_s = retry_max_wait_s
        self._in_flight: deque[_InFlight] = deque()
        self._committing = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.batches = 0
        self.positions = CommitPositions()
        self._committer = OffsetCommitter(self._commit)
        # Whether the last fetch was a full one (the worker is behind): the notice relay
        # defers to the revocations meanwhile (relay.py).
        self.catching_up = False
        self._flow = FlowRate()

    async def start(self) -> None:
        """Joins the group, retrying while the broker is unreachable or refuses (a missing
        ACL on the group or a topic), unless asked to stop."""
        async for attempt in retrying("kafka.join", on=KafkaError, wait_max=self._retry_max_wait_s):
            with attempt:
                if self._stopping.is_set():
                    return
                if attempt.num > 1:
                    await self._replace_consumer()
                self.consumer.subscribe(self._topics, listener=_DrainOnRevoke(self))
                await self.consumer.start()
        self.health.started()
        log.info("worker.started", topics=self._topics)

    async def _replace_consumer(self) -> None:
        # An aiokafka consumer whose start() failed after connecting (e.g. the group refused
        # it) cannot be started again: the next attempt gets a fresh one.
        if self._new_consumer is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.consumer.stop()
        self.consumer = self._new_consumer()

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("worker.stopping")
        self._stopping.set()

    async def run(self) -> None:
        """The poll loop; returns once a stop was requested and the in-flight batches are done.

        While the database applies the batches in flight, the next fetch and its parsing (CPU
        in this process) already run.
        """
        fetching = asyncio.create_task(self._fetch())
        try:
            while not self._stopping.is_set():
                fetched, parsed = await fetching
                if self._stopping.is_set():
                    break  # fetched but not applied: not committed, so redelivered
                self.consumer.pace(self._flow.add(fetched.records))
                fetching = asyncio.create_task(self._fetch())
                if fetched.records:
                    self.catching_up = fetched.records >= self._max_records // 2
                    wait_for = len(self._in_flight) - self._max_in_flight + 1
                    await self._commit_in_order(wait_for_oldest=wait_for)
                    self._start_batch(fetched, parsed)
                else:
                    self.catching_up = False
                    if fetched.offsets:  # markers only: committed behind the batches before
                        self._start_batch(fetched, parsed)
                await self._commit_in_order(wait_for_oldest=0)
            await self._commit_in_order(wait_for_oldest=None)
        finally:
            fetching.cancel()
            await self._committer.close()
            # Only after a crash are batches left: never committed, so they are redelivered.
            leftovers = [batch.applying for batch in self._in_flight]
            for task in leftovers:
                task.cancel()
            # Awaited, so that nothing runs on after this returns (the pool closes next);
            # return_exceptions keeps the original error the one that propagates.
            await asyncio.gather(fetching, *leftovers, return_exceptions=True)

    async def _fetch(self) -> tuple[_Fetch, ParsedBatch]:
        fetched = await self.consumer.getmany(
            timeout_ms=self._wait_ms, max_records=self._max_records
        )
        # The positions are read now, before anything else can fetch: every record before
        # them is in this fetch or an earlier one.
        offsets = self.positions.after_fetch(self.consumer, fetched)
        self.health.polled()
        records = [Record.from_consumer_record(r) for batch in fetched.values() for r in batch]
        return _Fetch(offsets, len(records)), self._handler.parse(records)

    def _start_batch(self, fetched: _Fetch, parsed: ParsedBatch) -> None:
        if fetched.records:
            applying: asyncio.Future[BatchOutcome] = asyncio.create_task(
                self._handler.apply(parsed)
            )
        else:
            applying = asyncio.get_running_loop().create_future()
            applying.set_result(BatchOutcome())
        self._in_flight.append(
            _InFlight(
                applying=applying,
                offsets=fetched.offsets,
                records=fetched.records,
                started=time.perf_counter(),
            )
        )

    async def _commit_in_order(self, wait_for_oldest: int | None) -> None:
        """Commits the offsets of finished batches, oldest first; waits for the oldest
        `wait_for_oldest` batches (None: all of them, and for the broker to take their offsets)
        to finish, and commits those that finished behind them."""
        async with self._committing:
            wait_for = len(self._in_flight) if wait_for_oldest is None else wait_for_oldest
            while self._in_flight and (wait_for > 0 or self._in_flight[0].applying.done()):
                batch = self._in_flight[0]
                self.health.waiting_on_services()
                try:
                    # Shielded: a caller that gives up waiting (a bounded rebalance drain) must
                    # not cancel the batch itself; the next settle picks it up.
                    outcome = await asyncio.shield(batch.applying)  # a crash propagates
                    self._in_flight.popleft()
                    wait_for -= 1
                    self._committer.queue(batch.offsets)
                finally:
                    self.health.done_waiting()
                self._observe(batch, outcome)
            if wait_for_oldest is None:
                await self._committer.flush()

    def _observe(self, batch: _InFlight, outcome: BatchOutcome) -> None:
        elapsed = time.perf_counter() - batch.started
        if batch.records:
            self.batches += 1
            metrics.BATCH_DURATION.observe(elapsed)
            metrics.BATCH_SIZE.observe(batch.records)
        owned = self.consumer.assignment()
        for tp, offset in batch.offsets.items():
            if tp not in owned:  # moved to another member meanwhile: its lag is theirs to report
                continue
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - offset)
                )
        if batch.records:
            log.info(
                "batch.done", records=batch.records, ms=round(elapsed * 1000, 1),
                **outcome.counts(),
            )  # fmt: skip

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        owned = self.consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            log.warning("offsets.skipped_revoked", partitions=len(offsets) - len(mine))
        if not mine:
            return
        try:
            async for attempt in retrying(
                "kafka.commit", on=_commit_retriable, attempts=10, wait_max=self._retry_max_wait_s
            ):
                with attempt:
                    await self.consumer.commit(mine)
        except (CommitFailedError, KafkaError) as exc:
            # The group moved on; whoever owns the partitions now re-applies these records,
            # which changes nothing (idempotent). Losing a commit loses no effect.
            log.warning("offsets.commit_failed", error=type(exc).__name__)

    async def drain_in_flight(self) -> None:
        """Finishes and commits the batches in flight (bounded); called before partitions move."""
        try:
            async with asyncio.timeout(self._rebalance_drain_s):
                await self._commit_in_order(wait_for_oldest=None)
        except TimeoutError:
            log.warning("kafka.rebalance.drain_timeout", seconds=self._rebalance_drain_s)

    async def ping_broker(self) -> bool:
        """Readiness: the end offset of one of our partitions, asked of its leader. The
        consumer itself retries quietly, so ask. Not the cluster's metadata: on a cluster of
        thousands of topics that answer is large, and over a slow link it alone outlasts the
        ping's 2 s."""
        assigned = sorted(self.consumer.assignment())
        try:
            async with asyncio.timeout(2):
                if assigned:
                    await self.consumer.end_offsets(assigned[:1])
                else:  # not ready anyway (no partitions); say whether the broker answers
                    await self.consumer.topics()
        except Exception:  # noqa: BLE001 - any failure means "not ready"; the caller needs a bool
            return False
        return True

    async def stop(self, timeout_s: float) -> None:
        """Leaves the group. aiokafka's stop() has been known to hang, hence the bound."""
        self.health.stopped()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await self.consumer.stop()
        log.info("worker.stopped", batches=self.batches)


def _commit_retriable(exc: Exception) -> bool:
    return (
        isinstance(exc, KafkaError)
        and not isinstance(exc, CommitFailedError)
        and bool(getattr(exc, "retriable", False))
    )
