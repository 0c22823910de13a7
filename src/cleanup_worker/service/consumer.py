"""`cleanup-worker run`: the consumer-group member with an explicit lifecycle.

fetch (getmany) -> BatchHandler (one transaction) -> commit offsets of partitions still owned.
An offset is committed only after the transaction that applied it committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import stamina
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from cleanup_worker.adapters.kafka import Record
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.observability.health import Health
from cleanup_worker.service.handler import BatchHandler, ParsedBatch

log = get_logger(__name__)


class _DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Lets the in-flight batch finish and commit before its partitions move (bounded)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker.drain_in_flight()
        log.info("kafka.partitions.revoked", partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._worker.health.assigned_partitions = len(self._worker.consumer.assignment())
        log.info("kafka.partitions.assigned", partitions=len(assigned))


class Worker:
    """Consumes until asked to stop, then drains: finish the batch, commit, leave the group."""

    def __init__(
        self,
        *,
        consumer: Any,
        handler: BatchHandler,
        health: Health,
        topics: list[str],
        max_records: int,
        wait_ms: int,
        rebalance_drain_s: float,
        retry_max_wait_s: float,
    ) -> None:
        self.consumer = consumer
        self.health = health
        self._handler = handler
        self._topics = topics
        self._max_records = max_records
        self._wait_ms = wait_ms
        self._rebalance_drain_s = rebalance_drain_s
        self._retry_max_wait_s = retry_max_wait_s
        self._in_flight = asyncio.Lock()
        self._stopping = asyncio.Event()
        self.batches = 0

    async def start(self) -> None:
        self.consumer.subscribe(self._topics, listener=_DrainOnRevoke(self))
        async for attempt in stamina.retry_context(
            on=KafkaError, attempts=None, timeout=None, wait_max=self._retry_max_wait_s
        ):
            with attempt:
                if attempt.num > 1:
                    log.warning("kafka.connect.retry", attempt=attempt.num)
                await self.consumer.start()
        self.health.running = True
        self.health.polled()
        log.info("worker.started", topics=self._topics)

    def request_stop(self) -> None:
        if not self._stopping.is_set():
            log.info("worker.stopping")
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        """The poll loop; returns once a stop was requested and the in-flight batch is done.

        Two stages overlap: while the database applies batch N, the next fetch and its
        parsing (CPU in this process) already run. Offsets stay exact: batch N+1 is applied,
        and its offsets committed, only after batch N's are.
        """
        fetching = asyncio.create_task(self._fetch())
        try:
            while not self._stopping.is_set():
                fetched, parsed = await fetching
                if self._stopping.is_set():
                    break  # fetched but not applied: not committed, so redelivered
                fetching = asyncio.create_task(self._fetch())
                if fetched:
                    async with self._in_flight:
                        await self._process(fetched, parsed)
        finally:
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching

    async def _fetch(self) -> tuple[dict[TopicPartition, list[Any]], ParsedBatch]:
        fetched = await self.consumer.getmany(
            timeout_ms=self._wait_ms, max_records=self._max_records
        )
        self.health.polled()
        records = [Record.from_consumer_record(r) for batch in fetched.values() for r in batch]
        return fetched, self._handler.parse(records)

    async def _process(self, fetched: dict[TopicPartition, list[Any]], parsed: ParsedBatch) -> None:
        started = time.perf_counter()
        outcome = await self._handler.apply(parsed)
        offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
        await self._commit(offsets)
        self.batches += 1
        elapsed = time.perf_counter() - started
        size = sum(len(batch) for batch in fetched.values())
        metrics.BATCH_DURATION.observe(elapsed)
        metrics.BATCH_SIZE.observe(size)
        self._record_lag(offsets)
        log.info("batch.done", records=size, ms=round(elapsed * 1000, 1), **outcome.counts())

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        owned = self.consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if len(mine) < len(offsets):
            log.warning("offsets.skipped_revoked", partitions=len(offsets) - len(mine))
        if not mine:
            return
        try:
            async for attempt in stamina.retry_context(
                on=_commit_retriable, attempts=10, wait_max=self._retry_max_wait_s
            ):
                with attempt:
                    await self.consumer.commit(mine)
        except (CommitFailedError, KafkaError) as exc:
            # The group moved on; whoever owns the partitions now re-applies these records,
            # which changes nothing (idempotent). Losing a commit loses no effect.
            log.warning("offsets.commit_failed", error=type(exc).__name__)

    def _record_lag(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            highwater = self.consumer.highwater(tp)
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(
                    max(0, highwater - offset)
                )

    async def drain_in_flight(self) -> None:
        """Waits (bounded) until no batch is being applied; called before partitions move."""
        try:
            async with asyncio.timeout(self._rebalance_drain_s):
                async with self._in_flight:
                    pass
        except TimeoutError:
            log.warning("kafka.rebalance.drain_timeout", seconds=self._rebalance_drain_s)

    async def stop(self, timeout_s: float) -> None:
        """Leaves the group. aiokafka's stop() has been known to hang, hence the bound."""
        self.health.running = False
        self.health.assigned_partitions = 0
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
