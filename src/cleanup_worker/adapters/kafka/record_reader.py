"""aiokafka's record reader, made unable to stop a partition (docs/events.md, "Records the
client cannot read").

aiokafka decodes a fetched partition lazily, inside `getmany`, with a generator
(`fetcher.PartitionRecords._unpack_records`). When its reader raises on one record (a header
name that is not UTF-8 does: `UnicodeDecodeError` from the C extension in use), the exception
leaves `getmany`: the records already drained from other partitions in that call are lost
to the caller while their positions have moved, the partition is fetched again from where
it was, and the same record raises again.

`install()` swaps two names in `aiokafka.consumer.fetcher` (the only seam its fetcher has):
`MemoryRecords` for a wrapper that keeps the fetched bytes, and `PartitionRecords` for a
subclass whose `_unpack_records` is aiokafka 0.14.0's, line for line, except that a batch the
reader refuses is read again by `salvage` (what reads cleanly is returned as usual, the rest
as `UnreadableConsumerRecord`), and a batch whose CRC does not match is fetched again a few
times before it is salvaged. The fast path is aiokafka's own loop; the extra cost is one
Python call per batch (not per record). aiokafka is pinned to the exact version this copies
(constraints.txt, pyproject.toml); tests/unit/test_record_reader.py fails if an upgrade
changes the reader behaviour relied on here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import aiokafka
from aiokafka.consumer import fetcher
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord

from cleanup_worker.adapters.kafka.salvage import Salvaged, find_batch, salvage
from cleanup_worker.logging import get_logger

log = get_logger(__name__)

AIOKAFKA_VERSION = "0.14.0"  # the version whose `_unpack_records` is copied below
CRC_REFETCHES = 3  # a CRC mismatch is fetched again this often (in transit?) before salvage
_crc_misses: dict[tuple[Any, int], int] = {}


@dataclasses.dataclass
class UnreadableConsumerRecord(ConsumerRecord[bytes, bytes]):  # type: ignore[misc]
    """A record the client library could not decode: what was recovered, and what not."""

    problem: str = ""


class _KeptRecords:
    """aiokafka's MemoryRecords, with the fetched bytes kept for `salvage`."""

    __slots__ = ("_records", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._records = MemoryRecords(raw)

    def has_next(self) -> bool:
        return bool(self._records.has_next())

    def next_batch(self) -> Any:
        return self._records.next_batch()

    def size_in_bytes(self) -> int:
        return int(self._records.size_in_bytes())


class _SalvagingPartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]
    def _unpack_records(self) -> Iterator[ConsumerRecord[bytes, bytes]]:
        # aiokafka 0.14.0's loop; the changes are marked "ours".
        tp = self._tp
        records = self._records
        while records.has_next():
            next_batch = records.next_batch()
            if self._check_crcs and not next_batch.validate_crc():
                # ours: aiokafka raises here, which loses the other partitions' records of
                # the same getmany; end this partition's fetch here instead (it is fetched
                # again from this batch), and salvage it once that did not help
                if not _crc_retry_exhausted(tp, next_batch.base_offset):
                    return
                yield from self._salvaged(next_batch, "batch CRC mismatch", unreadable=True)
                continue

            if (
                self._isolation_level == fetcher.READ_COMMITTED
                and next_batch.producer_id is not None
            ):
                self._consume_aborted_up_to(next_batch.base_offset)
                if next_batch.is_control_batch and self._contains_abort_marker(next_batch):
                    self._aborted_producers.discard(next_batch.producer_id)
                if (
                    next_batch.is_transactional
                    and next_batch.producer_id in self._aborted_producers
                ):
                    self.next_fetch_offset = next_batch.next_offset
                    continue

            if next_batch.is_control_batch:
                self.next_fetch_offset = next_batch.next_offset
                continue

            try:  # ours: free unless it raises
                for record in next_batch:
                    if record.offset < self.next_fetch_offset:
                        continue
                    consumer_record = self._consumer_record(tp, record)
                    self.next_fetch_offset = record.offset + 1
                    yield consumer_record
            except Exception as exc:  # noqa: BLE001 - whatever the reader raises, salvage
                yield from self._salvaged(next_batch, f"{type(exc).__name__}: {exc}")
            self.next_fetch_offset = next_batch.next_offset

    def _salvaged(
        self, batch: Any, reason: str, *, unreadable: bool = False
    ) -> Iterator[ConsumerRecord[bytes, bytes]]:
        """ours: the rest of a refused batch, read by `salvage`."""
        tp, first = self._tp, self.next_fetch_offset
        raw = find_batch(self._records.raw, batch.base_offset)
        log.error(
            "kafka.record.unreadable",
            topic=tp.topic,
            partition=tp.partition,
            offsets=f"{max(first, batch.base_offset)}..{batch.next_offset - 1}",
            error=reason[:300],
        )
        try:  # salvage is ours, but a bug in it must not stop the partition either
            if raw is None or raw[16] != 2:  # not found, or not the v2 format (magic byte)
                raise ValueError("batch bytes not found or not in the v2 format")
            found = list(salvage(raw, from_offset=first, reason=reason))
        except Exception as exc:  # noqa: BLE001 - the batch is unreadable, whatever the cause
            lost = f"offsets {first}..{batch.next_offset - 1} not recovered: {exc} ({reason})"
            found = [Salvaged(first, None, 0, None, raw, (), lost)]
        for item in found:
            problem = item.problem or (reason if unreadable else None)
            self.next_fetch_offset = item.offset + 1
            yield _consumer_record(tp, item, problem)
        self.next_fetch_offset = batch.next_offset


def _consumer_record(tp: Any, item: Salvaged, problem: str | None) -> ConsumerRecord[bytes, bytes]:
    fields = (
        tp.topic,
        tp.partition,
        item.offset,
        item.timestamp,
        item.timestamp_type,
        item.key,
        item.value,
        None,
        -1 if item.key is None else len(item.key),
        -1 if item.value is None else len(item.value),
        item.headers,
    )
    if problem is None:
        return ConsumerRecord(*fields)
    return UnreadableConsumerRecord(*fields, problem=problem)


def _crc_retry_exhausted(tp: Any, base_offset: int) -> bool:
    if len(_crc_misses) > 1000:  # a bound, not a cache policy: misses are rare
        _crc_misses.clear()
    seen = _crc_misses.get((tp, base_offset), 0) + 1
    _crc_misses[(tp, base_offset)] = seen
    log.warning("kafka.batch.crc_mismatch", topic=tp.topic, partition=tp.partition,
                offset=base_offset, attempt=seen)  # fmt: skip
    if seen <= CRC_REFETCHES:
        return False
    del _crc_misses[(tp, base_offset)]
    return True


def install() -> None:
    """Makes every aiokafka consumer in this process read through the salvaging reader."""
    if aiokafka.__version__ != AIOKAFKA_VERSION:
        raise RuntimeError(
            f"aiokafka {aiokafka.__version__}: the record reader wrapper is written for "
            f"{AIOKAFKA_VERSION} (adapters/kafka/record_reader.py); review it, then pin the new one"
        )
    fetcher.MemoryRecords = _KeptRecords
    fetcher.PartitionRecords = _SalvagingPartitionRecords
