"""What can be recovered of a record batch that aiokafka's reader refused: our own lenient
reading of Kafka's v2 batch format (KIP-98), used only after the library's reader raised.

Pure: bytes in, recovered records out. The strict reader raises on a header name that is not
UTF-8 (its C extension lets the UnicodeDecodeError out, its pure-Python one wraps it in a
CorruptRecordException), on a bad varint or a length that overruns, on bytes left after the
last record, and on a codec it cannot run. Here a name that is not UTF-8 is kept byte for byte
(decoded with `surrogateescape`), and a record whose structure cannot be followed ends the
reading: the rest of the batch becomes one `Salvaged` entry with its raw bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka import codec

# BaseOffset, Length, PartitionLeaderEpoch, Magic, CRC, Attributes, LastOffsetDelta,
# FirstTimestamp, MaxTimestamp, ProducerId, ProducerEpoch, BaseSequence, RecordCount
_HEADER = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qi")  # BaseOffset, Length: enough to walk from batch to batch
_LOG_APPEND_TIME = 0x08
_CODECS = {1: codec.gzip_decode, 2: codec.snappy_decode, 3: codec.lz4_decode, 4: codec.zstd_decode}
NAME_ERRORS = "surrogateescape"  # header names that are not UTF-8 keep their bytes
HEX_NOTE = "dlq.original.header-hex.<the name's bytes in hex>"


class _Broken(Exception):
    """The batch's bytes cannot be followed from here on."""


@dataclass(frozen=True, slots=True)
class Salvaged:
    """One record (or, where `problem` says so, the unreadable rest of a batch)."""

    offset: int
    timestamp: int | None
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    problem: str | None  # None: the record reads cleanly (it was not the one that failed)


def find_batch(raw: bytes, base_offset: int) -> bytes | None:
    """The bytes of the batch at `base_offset` in a fetch response's record set."""
    pos = 0
    while pos + _PREFIX.size <= len(raw):
        base, length = _PREFIX.unpack_from(raw, pos)
        end = pos + _PREFIX.size + length
        if base == base_offset:
            return raw[pos:end] if length > 0 and end <= len(raw) else None
        if length <= 0:
            return None
        pos = end
    return None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise _Broken(f"varint runs past the end at byte {pos}")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos + i + 1
        shift += 7
    raise _Broken(f"varint longer than 10 bytes at byte {pos}")


def _bytes(buf: bytes, pos: int) -> tuple[bytes | None, int]:
    size, pos = _varint(buf, pos)
    if size < 0:
        return None, pos
    if pos + size > len(buf):
        raise _Broken(f"{size} bytes announced at byte {pos}, {len(buf) - pos} left")
    return buf[pos : pos + size], pos + size


def _headers(body: bytes, pos: int) -> tuple[list[tuple[str, bytes | None]], int, int]:
    count, pos = _varint(body, pos)
    if count < 0:
        raise _Broken(f"header count {count}")
    headers: list[tuple[str, bytes | None]] = []
    bad_names = 0
    for _ in range(count):
        name, pos = _bytes(body, pos)
        if name is None:
            raise _Broken("a header without a name")
        value, pos = _bytes(body, pos)
        try:
            text = name.decode()
        except UnicodeDecodeError:
            text, bad_names = name.decode("utf-8", NAME_ERRORS), bad_names + 1
        headers.append((text, value))
    return headers, bad_names, pos


def _record(body: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
    """(timestamp delta, offset delta, key, value, headers, names not UTF-8), next position."""
    length, pos = _varint(body, pos)
    start = pos
    if pos >= len(body):
        raise _Broken(f"record cut short at byte {pos}")
    ts_delta, pos = _varint(body, pos + 1)  # after Attributes (one byte, unused)
    delta, pos = _varint(body, pos)
    key, pos = _bytes(body, pos)
    value, pos = _bytes(body, pos)
    headers, bad_names, pos = _headers(body, pos)
    if pos - start != length:
        raise _Broken(f"record length {length}, but its fields take {pos - start}")
    return (ts_delta, delta, key, value, tuple(headers), bad_names), pos


def salvage(batch: bytes, *, from_offset: int, reason: str) -> Iterator[Salvaged]:
    """The records of `batch` at or after `from_offset`, each marked with what is wrong with
    it; `reason` is what the strict reader said (kept with every unreadable entry)."""
    (base, _, _, _, _, attributes, last_delta, first_ts, max_ts, _, _, _, count) = (
        _HEADER.unpack_from(batch)
    )
    last = base + last_delta
    ts_type = 1 if attributes & _LOG_APPEND_TIME else 0
    body, pos, offset = batch, _HEADER.size, from_offset
    try:
        if attributes & 0x07:
            decode = _CODECS.get(attributes & 0x07)
            if decode is None:
                raise _Broken(f"unknown compression codec {attributes & 0x07}")
            body, pos = bytes(decode(batch[_HEADER.size :])), 0
        for _ in range(count):
            (ts_delta, delta, key, value, headers, bad_names), pos = _record(body, pos)
            if base + delta < from_offset:
                continue
            offset = base + delta
            ts = max_ts if ts_type else first_ts + ts_delta
            problem = (
                f"{bad_names} header name(s) not UTF-8, kept byte for byte (a dead letter "
                f"carries each as {HEX_NOTE}) ({reason})"
                if bad_names
                else None
            )
            yield Salvaged(offset, None if ts == -1 else ts, ts_type, key, value, headers, problem)
            offset += 1
        if pos != len(body):
            raise _Broken(f"{len(body) - pos} bytes after the last record")
    except (_Broken, ValueError, OSError) as exc:  # ValueError, OSError: a codec's own errors
        if offset <= last:
            yield Salvaged(
                offset,
                None,
                ts_type,
                None,
                batch,
                (),
                f"unreadable record structure in the batch of offsets {base}..{last}: {exc} "
                f"({reason}); offsets {offset}..{last} not recovered, value is the raw batch",
            )
