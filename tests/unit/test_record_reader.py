"""The reader behaviour adapters/kafka/record_reader.py relies on, pinned: an aiokafka upgrade
that changes it fails here, not in a deployment. And the salvaging reader itself, on batches
built byte by byte (no broker needed: these are the bytes a fetch response carries)."""

from __future__ import annotations

import hashlib
import inspect
import struct
from typing import Any

import aiokafka
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.errors import CorruptRecordException
from aiokafka.record import default_records
from aiokafka.record.memory_records import MemoryRecords

from cleanup_worker.adapters.kafka import record_reader
from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.adapters.kafka.record_reader import (
    UnreadableConsumerRecord,
    _KeptRecords,
    _SalvagingPartitionRecords,
)
from testkit.wire import RawRecord, batch, encode_record

TP = TopicPartition("events", 0)
BAD = b"\xff\xfename"
# sha256 of aiokafka 0.14.0's PartitionRecords._unpack_records, which record_reader copies.
UNPACK_SHA256 = "b803e6d46480732c7a7faa8e784b338bcdd4e707ea67fba96c013654b04b8a08"


def read(raw: bytes) -> list[Any]:
    records = _SalvagingPartitionRecords(
        TP, _KeptRecords(raw), [], 0, None, None, True, fetcher.READ_COMMITTED
    )
    return list(records)


def test_the_pinned_aiokafka_is_the_one_installed() -> None:
    assert aiokafka.__version__ == record_reader.AIOKAFKA_VERSION


def test_the_copied_loop_and_the_seam_are_unchanged() -> None:
    """The loop we copy is byte for byte the one we read, and the fetcher still builds its
    records through the two module names `install()` replaces."""
    # The class we subclass, not `fetcher.PartitionRecords`: once a consumer has started in
    # this process, that name is ours (`install()`).
    (original,) = _SalvagingPartitionRecords.__bases__
    assert original.__module__ == fetcher.__name__
    source = inspect.getsource(original._unpack_records)
    assert hashlib.sha256(source.encode()).hexdigest() == UNPACK_SHA256
    building = inspect.getsource(fetcher.Fetcher._proc_fetch_request)
    assert "MemoryRecords(" in building
    assert "PartitionRecords(" in building


def test_the_fetcher_still_reads_its_wait_and_minimum_for_each_request() -> None:
    """What `pace` (clients.py) sets: the two attributes every fetch request is built from."""
    init = inspect.getsource(fetcher.Fetcher.__init__)
    assert "self._fetch_min_bytes = fetch_min_bytes" in init
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in init
    building = inspect.getsource(fetcher.Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms,\n                self._fetch_min_bytes," in building


def test_the_c_reader_is_in_use_and_raises_on_a_header_name_that_is_not_utf8() -> None:
    """What we guard against: the C extension's UnicodeDecodeError (the pure-Python reader
    wraps the same failure in CorruptRecordException, also caught)."""
    assert default_records.DefaultRecordBatch.__module__.endswith("_crecords.default_records")
    raw = batch([RawRecord(b"k", b"v", [(BAD, b"x")])])
    with pytest.raises(UnicodeDecodeError):
        list(MemoryRecords(raw).next_batch())
    python_reader = default_records._DefaultRecordBatchPy(bytearray(raw))
    with pytest.raises(CorruptRecordException):
        list(python_reader)


def test_a_bad_header_name_is_salvaged_between_readable_records() -> None:
    raw = batch([RawRecord(b"a", b"1"), RawRecord(b"b", b"2", [(BAD, b"x"), (b"ok", None)]),
                 RawRecord(None, None, [(b"ok", b"y")])])  # fmt: skip
    first, bad, last = read(raw)
    assert not isinstance(first, UnreadableConsumerRecord)
    assert not isinstance(last, UnreadableConsumerRecord)
    assert isinstance(bad, UnreadableConsumerRecord)
    assert (bad.offset, bad.key, bad.value) == (1, b"b", b"2")
    assert [(n.encode("utf-8", "surrogateescape"), v) for n, v in bad.headers] == [
        (BAD, b"x"), (b"ok", None)]  # fmt: skip
    assert "not UTF-8" in bad.problem
    assert (last.offset, last.key, last.value, list(last.headers)) == (2, None, None,
                                                                      [("ok", b"y")])  # fmt: skip
    assert Record.from_consumer_record(bad).unreadable == bad.problem
    assert Record.from_consumer_record(last).unreadable is None


def test_a_record_whose_structure_breaks_ends_the_batch_as_one_unreadable_entry() -> None:
    good = encode_record(0, 0, RawRecord(b"a", b"1"))
    broken = encode_record(1, 0, RawRecord(b"b", b"2"))[:-2] + b"\x7f\x7f"  # lengths lie
    raw = batch([RawRecord(b"a", b"1"), RawRecord(b"b", b"2")], body=good + broken)
    first, rest = read(raw)
    assert (first.offset, first.value) == (0, b"1")
    assert isinstance(rest, UnreadableConsumerRecord)
    assert rest.offset == 1
    assert rest.value == raw
    assert "offsets 1..1 not recovered" in rest.problem


def test_a_crc_mismatch_is_fetched_again_then_salvaged() -> None:
    """Each of the first CRC_REFETCHES readings ends before the batch (the fetcher asks for
    it again); the next one hands out its records, each marked unreadable."""
    raw = bytearray(batch([RawRecord(b"a", b"1")]))
    struct.pack_into(">I", raw, 17, 0)  # a CRC that does not match
    for _ in range(record_reader.CRC_REFETCHES):
        assert read(bytes(raw)) == []
    [record] = read(bytes(raw))
    assert isinstance(record, UnreadableConsumerRecord)
    assert record.value == b"1"
    assert "CRC" in record.problem


def test_a_batch_salvage_cannot_find_is_one_unreadable_entry_and_the_reading_goes_on() -> None:
    """Whatever goes wrong in the salvage itself, the partition moves past the batch."""
    first = batch([RawRecord(b"a", b"1", [(BAD, b"x")]), RawRecord(b"b", b"2")])
    kept = _KeptRecords(first)
    kept.raw = b""  # the fetched bytes lost: salvage has nothing to read
    records = list(
        _SalvagingPartitionRecords(TP, kept, [], 0, None, None, True, fetcher.READ_COMMITTED)
    )
    [entry] = records
    assert isinstance(entry, UnreadableConsumerRecord)
    assert entry.offset == 0
    assert "offsets 0..1 not recovered" in entry.problem
