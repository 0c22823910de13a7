"""Records built byte by byte (Kafka's v2 record batch, KIP-98) and produced with a raw
ProduceRequest: what no client's API lets us write (header names that are not UTF-8, or that
hold NUL bytes), written exactly as a hostile or buggy producer could."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaClient, TopicPartition
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.util import calc_crc32c

from cleanup_worker.settings import Settings

RawHeader = tuple[bytes, bytes | None]


@dataclass(frozen=True)
class RawRecord:
    key: bytes | None
    value: bytes | None
    headers: Sequence[RawHeader] = field(default_factory=tuple)
    timestamp_ms: int | None = None  # None: now; -1 is Kafka's "no timestamp"


def _varint(value: int) -> bytes:
    value = (value << 1) ^ (value >> 63)  # zigzag
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _sized(data: bytes | None) -> bytes:
    return _varint(-1) if data is None else _varint(len(data)) + data


def encode_record(delta: int, ts_delta: int, record: RawRecord) -> bytes:
    body = b"\x00" + _varint(ts_delta) + _varint(delta) + _sized(record.key)
    body += _sized(record.value) + _varint(len(record.headers))
    for name, value in record.headers:
        body += _sized(name) + _sized(value)
    return _varint(len(body)) + body


def batch(records: Sequence[RawRecord], *, body: bytes | None = None) -> bytes:
    """One uncompressed, non-transactional v2 batch (`body`: records already encoded)."""
    now = int(time.time() * 1000)
    stamps = [now if r.timestamp_ms is None else r.timestamp_ms for r in records]
    first = stamps[0] if stamps else now
    if body is None:
        pairs = enumerate(zip(stamps, records, strict=True))
        body = b"".join(encode_record(i, ts - first, r) for i, (ts, r) in pairs)
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            0,
            len(records) - 1,
            first,
            max(stamps, default=now),
            -1,
            -1,
            -1,
            len(records),
        )
        + body
    )
    crc = calc_crc32c(after_crc)
    # BaseOffset, Length (from PartitionLeaderEpoch on), PartitionLeaderEpoch, Magic, CRC
    head = struct.pack(">ibI", -1, 2, crc)
    return struct.pack(">qi", 0, len(head) + len(after_crc)) + head + after_crc


async def produce_raw(settings: Settings, topic: str, partition: int, data: bytes) -> int:
    """Sends one record set to the partition's leader; returns the base offset it got."""
    client = AIOKafkaClient(bootstrap_servers=settings.require_kafka())
    await client.bootstrap()
    try:
        await client._wait_on_metadata(topic)
        leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
        request = ProduceRequest(None, -1, 30000, [(topic, [(partition, data)])])
        response = await client.send(leader, request)
    finally:
        await client.close()
    [(_, [answer])] = response.topics
    error, base_offset = answer[1], answer[2]
    assert error == 0, f"the broker refused the raw batch: error code {error}"
    return int(base_offset)
