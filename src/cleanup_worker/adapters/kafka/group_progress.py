"""How far the whole consumer group has got, in time: R6's guard ("R6 waits for
the group", docs/design.md).

"Consumed every record produced before X" means, on every partition of the configured
topics, the group's committed offset is at or past the first record whose timestamp is X
or later (Kafka's offsets-for-times), or at the end when there is none. Committed offsets
are the right measure: the worker commits an offset only after the transaction that
applied the record committed. The whole group is asked, not this replica's partitions.

Transactions (docs/events.md): the worker commits its position, which read_committed moves
past commit and abort markers, so a partition whose last entries are markers counts as
consumed. The brokers are asked with read_uncommitted, so the end is the high-water mark: a
transaction still open ends the group's progress at its first record (the last stable
offset), below that mark, and R6 waits until it is committed or aborted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import TopicPartition

from cleanup_worker.adapters.kafka.windows import topic_partitions


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class GroupProgress:
    """Asks the brokers about one consumer group. The clients are started by the caller."""

    def __init__(self, consumer: Any, admin: Any, group_id: str, topics: Sequence[str]) -> None:
        self._consumer = consumer  # a standalone consumer (no group), read_uncommitted
        self._admin = admin
        self._group_id = group_id
        self._topics = list(topics)

    async def consumed_before(self, cutoffs: Sequence[datetime]) -> datetime | None:
        """The latest of `cutoffs` before which the group has consumed every record, or None
        when it has not got that far for any of them.

        Monotone in the cutoff, so a binary search asks offsets-for-times a few times at most.
        """
        ordered = sorted(set(cutoffs))
        if not ordered:
            return None
        partitions = [
            TopicPartition(topic, partition)
            for topic, numbers in (
                await topic_partitions(self._consumer, self._admin, self._topics)
            ).items()
            for partition in numbers
        ]
        committed = {
            tp: meta.offset
            for tp, meta in (await self._admin.list_consumer_group_offsets(self._group_id)).items()
            if meta.offset >= 0
        }
        never = [tp for tp in partitions if tp not in committed]
        beginning = await self._consumer.beginning_offsets(never) if never else {}
        # Where the group stands: its committed offset, or, with none, the first record
        # still retained (a partition it never had to read).
        position = {tp: committed[tp] if tp in committed else beginning[tp] for tp in partitions}

        async def caught_up(cutoff: datetime) -> bool:
            found = await self._consumer.offsets_for_times({tp: _ms(cutoff) for tp in partitions})
            # No record that late: every record there is counts. The end is read after the
            # answer, so a record appended meanwhile (with an older timestamp) counts too.
            empty = [tp for tp in partitions if found.get(tp) is None]
            end = await self._consumer.end_offsets(empty) if empty else {}
            for tp in partitions:
                hit = found.get(tp)
                first_not_before = end[tp] if hit is None else hit.offset
                if position[tp] < first_not_before:
                    return False
            return True

        # The oldest first: while the group lags far behind, one question settles it.
        if not await caught_up(ordered[0]):
            return None
        if len(ordered) == 1 or await caught_up(ordered[-1]):
            return ordered[-1]
        best, lo, hi = ordered[0], 1, len(ordered) - 2
        while lo <= hi:
            mid = (lo + hi) // 2
            if await caught_up(ordered[mid]):
                best = ordered[mid]
                lo = mid + 1
            else:
                hi = mid - 1
        return best
