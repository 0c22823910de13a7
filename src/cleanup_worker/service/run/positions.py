"""The offsets a fetch lets the worker commit: the consumer's position, past transaction markers.

read_committed skips commit and abort markers and aborted batches without returning them, so
the last record's offset + 1 would leave a group one short of a marker for ever (lag 1, R6
waiting on a quiet topic). The position is read right after `getmany`, before anything else
fetches: every record before it is in that fetch or an earlier one, so committing it behind
their batches keeps the rule that an offset is committed only after its records were applied.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from cleanup_worker.adapters.kafka.clients import Fetched, GroupConsumer
from cleanup_worker.logging import get_logger

log = get_logger(__name__)

# How often, at most, the positions of partitions that returned no records are looked at
# (they move past markers without a record to show for it).
SCAN_IDLE_S = 0.2
SCAN_BUSY_S = 1.0


class CommitPositions:
    """Per partition, the offset last queued for commit; what a fetch adds to it."""

    def __init__(self) -> None:
        self._queued: dict[TopicPartition, int] = {}
        self._scanned_at = 0.0

    def after_fetch(self, consumer: GroupConsumer, fetched: Fetched) -> dict[TopicPartition, int]:
        """The offsets to commit once this fetch's records are applied (call it right after
        `getmany`, before the next one)."""
        position = consumer.consumed_position
        offsets: dict[TopicPartition, int] = {}
        for tp, batch in fetched.items():
            if batch:
                found = position(tp)
                offsets[tp] = batch[-1].offset + 1 if found is None else found
        now = time.monotonic()
        if now - self._scanned_at >= (SCAN_BUSY_S if fetched else SCAN_IDLE_S):
            self._scanned_at = now
            for tp in consumer.assignment():
                found, queued = position(tp), self._queued.get(tp)
                if tp in offsets or found is None or queued is None:
                    continue
                if found > queued:  # moved past markers only
                    offsets[tp] = found
        self._queued.update(offsets)
        return offsets

    async def learn(self, consumer: GroupConsumer, partitions: list[TopicPartition]) -> None:
        """Where the group stands in newly assigned partitions: a position past that (and
        past no record, only markers) is worth committing. Without it (the question failed),
        a partition's markers are committed with its next record."""
        try:
            async with asyncio.timeout(5):  # bounded: the rebalance waits for this listener
                committed = await consumer.committed_offsets(partitions)
        except (KafkaError, TimeoutError) as exc:
            log.warning("offsets.committed_unknown", error=type(exc).__name__)
            return
        for tp in partitions:
            self._queued[tp] = committed.get(tp, 0)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Partitions that moved away: whoever owns them next commits their markers."""
        for tp in partitions:
            self._queued.pop(tp, None)
