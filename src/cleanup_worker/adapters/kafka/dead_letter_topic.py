"""The dead-letter topic: what failed, byte for byte, with where it came from and why."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from cleanup_worker import __version__
from cleanup_worker.adapters.kafka.clients import Producer, Record
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.retries import retrying

log = get_logger(__name__)

# Provenance headers, added after the record's own headers (which are kept, ce_* included).
H_TOPIC = "dlq.original.topic"
H_PARTITION = "dlq.original.partition"
H_OFFSET = "dlq.original.offset"
H_TIMESTAMP = "dlq.original.timestamp"
H_KEY = "dlq.original.key"
H_GROUP = "dlq.consumer.group"
H_ERROR_CLASS = "dlq.error.class"
H_ERROR_MESSAGE = "dlq.error.message"
H_VERSION = "dlq.worker.version"
H_FAILED_AT = "dlq.failed.at"
H_VALUE_DROPPED = "dlq.value.dropped"  # bytes of a value too large to forward
H_KEY_DROPPED = "dlq.key.dropped"  # bytes of a key too large to forward
# A header of the original whose name is not UTF-8 (Kafka's clients could not write it again):
# this prefix, then the name's bytes in hex; the value is the original value.
H_HEADER_HEX = "dlq.original.header-hex."
# The error class of a record the client library could not decode (adapters/kafka/salvage.py).
UNREADABLE = "UnreadableRecord"
PROVENANCE_HEADERS = frozenset(
    {H_TOPIC, H_PARTITION, H_OFFSET, H_TIMESTAMP, H_KEY, H_GROUP, H_ERROR_CLASS,
     H_ERROR_MESSAGE, H_VERSION, H_FAILED_AT, H_VALUE_DROPPED, H_KEY_DROPPED}
)  # fmt: skip


class Failure(Protocol):
    """Why a record could not be applied, as the dead letter records it. The service decides
    it (service/apply/classify.py's `Failure` is one); the message is safe to log."""

    @property
    def error_class(self) -> str: ...

    @property
    def message(self) -> str: ...


def provenance_headers(record: Record, group: str, failure: Failure) -> list[tuple[str, bytes]]:
    values = {
        H_TOPIC: record.topic,
        H_PARTITION: str(record.partition),
        H_OFFSET: str(record.offset),
        H_TIMESTAMP: str(-1 if record.timestamp_ms is None else record.timestamp_ms),
        H_GROUP: group,
        H_ERROR_CLASS: failure.error_class,
        H_ERROR_MESSAGE: failure.message[:1000],
        H_VERSION: __version__,
        H_FAILED_AT: str(int(time.time() * 1000)),
    }
    headers = [(name, value.encode()) for name, value in values.items()]
    if record.key is not None:
        headers.append((H_KEY, record.key))
    return headers


def decode_provenance(headers: Mapping[str, bytes | None]) -> dict[str, str]:
    return {
        name: (value or b"").decode("utf-8", "replace")
        for name, value in headers.items()
        if name in PROVENANCE_HEADERS
    }


Letter = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def letter_forms(record: Record, group: str, failure: Failure) -> list[tuple[str, Letter]]:
    """The dead letter, then ever smaller forms of it (each with what it drops) for when it
    exceeds Kafka's size limit: the provenance made it so, or the topics' limits differ.

    The copy of the key in dlq.original.key goes first (the letter's own key is the
    original); then the value with the record's own headers, their sizes noted; then the
    key. The last form is provenance alone, which always fits.
    """
    own = [(_sendable(name), value) for name, value in record.headers
           if name not in PROVENANCE_HEADERS]  # fmt: skip
    provenance = provenance_headers(record, group, failure)
    no_copy = [(name, value) for name, value in provenance if name != H_KEY]
    value_size = (H_VALUE_DROPPED, b"%d" % len(record.value or b""))
    key_size = (H_KEY_DROPPED, b"%d" % len(record.key or b""))
    # An empty value where the original is dropped: a null value is a tombstone (compaction
    # would delete the key's earlier letters). A tombstone without a key gets an empty key,
    # as aiokafka refuses a record with neither; dlq.original.key is then absent, as it is
    # for every record without a key, and the letter still reads as the tombstone it was.
    key = b"" if record.key is None and record.value is None else record.key
    return [
        ("", (key, record.value, [*own, *provenance])),
        ("key copy", (key, record.value, [*own, *no_copy])),
        ("value", (record.key, b"", [*provenance, value_size])),
        ("value, key copy", (record.key, b"", [*no_copy, value_size])),
        ("value, key", (None, b"", [*no_copy, value_size, key_size])),
    ]


def _sendable(name: str) -> str:
    try:
        name.encode()
    except UnicodeEncodeError:  # kept byte for byte by the reader (surrogateescape)
        return H_HEADER_HEX + name.encode("utf-8", "surrogateescape").hex()
    return name


def _worth_retrying(exc: Exception) -> bool:
    return isinstance(exc, KafkaError) and not isinstance(
        exc, MessageSizeTooLargeError | RecordTooLargeError
    )


class DeadLetterPublisher:
    """Publishes to the dead-letter topic, retrying until the broker has it.

    The caller commits the original offset only after `publish` returns, so a dead letter
    is never lost between the two topics.
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        group: str,
        retry_max_wait_s: float,
        *,
        on_blocked: Callable[[], None] | None = None,
        on_flowing: Callable[[], None] | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._group = group
        self._retry_max_wait_s = retry_max_wait_s
        self._on_blocked = on_blocked
        self._on_flowing = on_flowing

    async def _send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
    ) -> None:
        # Every other error is retried, without end: a broker that is down, or a missing
        # permission, must block the commit rather than lose the dead letter.
        blocked = False
        async for attempt in retrying(
            "kafka.dlq.publish", on=_worth_retrying, wait_max=self._retry_max_wait_s
        ):
            with attempt:
                if attempt.num > 1 and not blocked and self._on_blocked:
                    blocked = True
                    self._on_blocked()
                await self._producer.send_and_wait(
                    self._topic, value=value, key=key, headers=headers
                )
        if blocked and self._on_flowing:
            self._on_flowing()

    async def publish(self, record: Record, failure: Failure) -> None:
        for dropped, (key, value, headers) in letter_forms(record, self._group, failure):
            if dropped:
                log.error(
                    "dlq.value_dropped" if "value" in dropped else "dlq.key_copy_dropped",
                    topic=record.topic,
                    offset=record.offset,
                    bytes=len(record.value or b""),
                    key_bytes=len(record.key or b""),
                    dropped=dropped,
                )
            try:
                await self._send(key, value, headers)
                break
            except (MessageSizeTooLargeError, RecordTooLargeError):
                continue  # retrying cannot help and would block the partition: send less
        metrics.DEAD_LETTERS.labels(failure.error_class).inc()
        log.warning(
            "dlq.published",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error_class=failure.error_class,
            error=failure.message,
        )
