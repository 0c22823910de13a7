"""Windows of a topic: where a read starts and stops in each partition, and reading one.

`parse_when`, `select_partitions` and `plan` are pure (unit-tested without a broker);
`resolve_window` asks the broker what they need (partitions, beginning and end offsets,
offsets-for-times) and `WindowReader` reads the window with manual assignment, outside any
consumer group, so no group's committed offsets are ever touched.

A window is half-open in every partition: `start` is the first offset read, `stop` the first
offset not read. A time resolves to the first offset whose timestamp is at or after it (the
end offset when there is none), so `--from T1 --to T2` reads records stamped in [T1, T2).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from aiokafka import TopicPartition

from cleanup_worker.adapters.kafka.clients import Admin, PartitionReader, Record
from cleanup_worker.errors import WindowError

Partition = tuple[str, int]  # (topic, partition); aiokafka's TopicPartition is such a tuple
Named = Literal["earliest", "latest"]

_OFFSETS_RE = re.compile(r"[0-9]+:[0-9]+(,[0-9]+:[0-9]+)*")


@dataclass(frozen=True, slots=True)
class AtTime:
    """A wall-clock bound, resolved per partition with offsets-for-times."""

    at: datetime

    @property
    def ms(self) -> int:
        return int(self.at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class AtOffsets:
    """Explicit offsets, by partition number (of a single topic)."""

    offsets: Mapping[int, int]


Bound = Named | AtTime | AtOffsets


@dataclass(frozen=True, slots=True)
class Span:
    """The offsets read in one partition: [start, stop)."""

    start: int
    stop: int

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


def parse_when(text: str) -> Bound:
    """`earliest`, `latest`, `PARTITION:OFFSET[,PARTITION:OFFSET...]` or an RFC 3339 time."""
    value = text.strip()
    if value.lower() in ("earliest", "latest"):
        return "earliest" if value.lower() == "earliest" else "latest"
    if _OFFSETS_RE.fullmatch(value):
        offsets: dict[int, int] = {}
        for item in value.split(","):
            partition, offset = (int(part) for part in item.split(":"))
            if partition in offsets:
                raise WindowError(f"{value!r}: partition {partition} given twice")
            offsets[partition] = offset
        return AtOffsets(offsets)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise WindowError(
            f"{value!r}: expected an RFC 3339 time (2026-11-26T14:00:00Z), "
            "earliest, latest, or PARTITION:OFFSET"
        ) from None
    if moment.tzinfo is None:
        raise WindowError(f"{value!r}: a time needs an offset, such as Z or +01:00")
    if moment.timestamp() < 0:
        raise WindowError(f"{value!r}: before 1970")
    return AtTime(moment)


def select_partitions(
    available: Mapping[str, Sequence[int]], start: Bound, stop: Bound, requested: Sequence[int]
) -> list[Partition]:
    """The partitions of the window: those requested, else those `start` names, else all."""
    topics = sorted(available)
    for bound, option in ((start, "--from"), (stop, "--to")):
        if isinstance(bound, AtOffsets) and len(topics) != 1:
            raise WindowError(f"{option} PARTITION:OFFSET needs exactly one topic (use --topic)")
    for topic in topics:
        missing = sorted(set(requested) - set(available[topic]))
        if missing:
            raise WindowError(f"topic {topic!r} has no partition {', '.join(map(str, missing))}")
    if requested:
        chosen = [(topic, p) for topic in topics for p in sorted(set(requested))]
    elif isinstance(start, AtOffsets):
        chosen = [(topics[0], p) for p in sorted(start.offsets)]
        missing = sorted(set(start.offsets) - set(available[topics[0]]))
        if missing:
            raise WindowError(
                f"topic {topics[0]!r} has no partition {', '.join(map(str, missing))}"
            )
    else:
        chosen = [(topic, p) for topic in topics for p in sorted(available[topic])]
    numbers = {p for _, p in chosen}
    if isinstance(start, AtOffsets) and (unstarted := sorted(numbers - set(start.offsets))):
        raise WindowError(f"--from names no offset for partition {unstarted[0]}")
    for bound, option in ((start, "--from"), (stop, "--to")):
        if isinstance(bound, AtOffsets) and (outside := sorted(set(bound.offsets) - numbers)):
            raise WindowError(f"{option} names partition {outside[0]}, which is not in the window")
    return chosen


def _offset(
    bound: Bound, partition: Partition, first: int, end: int, found: Mapping[Partition, int | None]
) -> int:
    if bound == "earliest":
        return first
    if bound == "latest":
        return end
    if isinstance(bound, AtOffsets):
        return bound.offsets.get(partition[1], end)  # a --to without this partition: latest
    offset = found.get(partition)
    return end if offset is None else offset


def plan(
    start: Bound,
    stop: Bound,
    partitions: Sequence[Partition],
    *,
    beginning: Mapping[Partition, int],
    end: Mapping[Partition, int],
    found_start: Mapping[Partition, int | None],
    found_stop: Mapping[Partition, int | None],
) -> dict[Partition, Span]:
    """Offsets per partition, clamped to what the partition holds: first <= start <= stop <= end.

    `found_*` are the offsets-for-times answers for a time bound (None: no record that late).
    """
    window: dict[Partition, Span] = {}
    for partition in partitions:
        first, last = beginning[partition], end[partition]
        lo = min(max(_offset(start, partition, first, last, found_start), first), last)
        hi = min(max(_offset(stop, partition, first, last, found_stop), lo), last)
        window[partition] = Span(lo, hi)
    return window


async def _times(
    consumer: PartitionReader, bound: Bound, partitions: Sequence[Partition]
) -> dict[Partition, int | None]:
    if not isinstance(bound, AtTime) or not partitions:
        return {}
    answer = await consumer.offsets_for_times({TopicPartition(*p): bound.ms for p in partitions})
    return {(tp.topic, tp.partition): (None if hit is None else hit.offset) for tp, hit in
            answer.items()}  # fmt: skip


async def topic_partitions(
    consumer: PartitionReader, admin: Admin, topics: Sequence[str]
) -> dict[str, list[int]]:
    """The partition numbers of each topic; a topic that does not exist is an error."""
    known = await consumer.topics()  # all topics: a lookup that never auto-creates one
    missing = [topic for topic in topics if topic not in known]
    if missing:
        raise WindowError(f"topic {missing[0]!r} not found")
    described = await admin.describe_topics(list(topics))
    return {d["topic"]: sorted(p["partition"] for p in d["partitions"]) for d in described}


async def resolve_window(
    consumer: PartitionReader,
    admin: Admin,
    topics: Sequence[str],
    start: Bound,
    stop: Bound,
    *,
    requested: Sequence[int] = (),
) -> dict[Partition, Span]:
    """Asks the broker for what `plan` needs; `latest` is the end offset as of this call."""
    available = await topic_partitions(consumer, admin, topics)
    partitions = select_partitions(available, start, stop, requested)
    tps = [TopicPartition(*p) for p in partitions]
    beginning = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    return plan(
        start,
        stop,
        partitions,
        beginning={(tp.topic, tp.partition): offset for tp, offset in beginning.items()},
        end={(tp.topic, tp.partition): offset for tp, offset in end.items()},
        found_start=await _times(consumer, start, partitions),
        found_stop=await _times(consumer, stop, partitions),
    )


class WindowReader:
    """Reads a window with manual assignment and no group; stops each partition at its bound."""

    def __init__(
        self, consumer: PartitionReader, window: Mapping[Partition, Span], *, batch_size: int
    ) -> None:
        self._consumer = consumer
        self._window = dict(window)
        self._batch_size = batch_size
        self.positions: dict[Partition, int] = {p: span.start for p, span in window.items()}
        self.read: dict[Partition, int] = dict.fromkeys(window, 0)

    def done(self, partition: Partition) -> bool:
        return self.positions[partition] >= self._window[partition].stop

    async def batches(self, *, poll_ms: int = 500) -> AsyncIterator[list[Record]]:
        """Yields the window's records in batches (partitions interleaved, each in order)."""
        active = [TopicPartition(*p) for p in sorted(self._window) if not self.done(p)]
        if not active:
            return
        self._consumer.assign(active)
        for tp in active:
            self._consumer.seek(tp, self._window[(tp.topic, tp.partition)].start)
        while active:
            fetched = await self._consumer.getmany(
                *active, timeout_ms=poll_ms, max_records=self._batch_size
            )
            records: list[Record] = []
            for tp, batch in fetched.items():
                stop = self._window[(tp.topic, tp.partition)].stop
                kept = [Record.from_consumer_record(r) for r in batch if r.offset < stop]
                records.extend(kept)
                self.read[(tp.topic, tp.partition)] += len(kept)
            for tp in active:
                partition = (tp.topic, tp.partition)
                stop = self._window[partition].stop
                self.positions[partition] = min(await self._consumer.position(tp), stop)
            finished = [tp for tp in active if self.done((tp.topic, tp.partition))]
            if finished:
                self._consumer.pause(*finished)
                active = [tp for tp in active if tp not in finished]
            if records:
                yield records
