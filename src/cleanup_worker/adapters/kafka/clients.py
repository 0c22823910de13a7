"""aiokafka clients built from settings, and the broker-neutral record the services work on."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.helpers import create_ssl_context

from cleanup_worker.adapters.kafka import record_reader
from cleanup_worker.domain.events import Origin
from cleanup_worker.errors import ConfigurationError
from cleanup_worker.logging import get_logger
from cleanup_worker.settings import ENV_PREFIX, Settings

log = get_logger(__name__)

# aiokafka ships no type information: these Protocols name the part of its clients we use,
# so that mypy checks our side of every call.

Fetched = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
# A Kafka record header: its name, and its value (Kafka allows a null one).
Header = tuple[str, bytes | None]


class _Client(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def topics(self) -> set[str]: ...

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> Fetched: ...


class GroupConsumer(_Client, Protocol):
    """The live group's consumer (`group_consumer`)."""

    def subscribe(self, topics: Sequence[str], *, listener: ConsumerRebalanceListener) -> None: ...

    def assignment(self) -> set[TopicPartition]: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None: ...

    def consumed_position(self, partition: TopicPartition) -> int | None: ...

    def pace(self, records_per_s: float) -> None: ...

    async def committed_offsets(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    async def end_offsets(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]: ...


class PartitionReader(_Client, Protocol):
    """A consumer outside any group that reads chosen partitions (`standalone_consumer`)."""

    def assign(self, partitions: Sequence[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    async def position(self, partition: TopicPartition) -> int: ...

    async def beginning_offsets(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    async def end_offsets(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    async def offsets_for_times(
        self, timestamps: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, Any]: ...  # OffsetAndTimestamp or None


class Admin(Protocol):
    """The admin client (topic descriptions for replay windows)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]: ...


class BatchBuilder(Protocol):
    """A producer batch being filled (`Producer.create_batch`)."""

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[Header],
    ) -> Any: ...  # None: the batch is full (and closed)

    def close(self) -> None: ...


class Producer(Protocol):
    """The idempotent producer (`producer`)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def partitions_for(self, topic: str) -> set[int]: ...

    def create_batch(self) -> BatchBuilder: ...

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]: ...  # resolves once the broker acknowledged the batch

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[Header] | None = None,
    ) -> asyncio.Future[Any]: ...  # resolves to RecordMetadata once the broker acknowledged

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[Header] | None = None,
    ) -> Any: ...  # RecordMetadata


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as the services see it: where it came from, and its bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None  # None: the producer gave none (-1 on the wire)
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    # Set when the client library could not decode the record: what could not be recovered
    # (header names that are not UTF-8 then keep their bytes through `surrogateescape`).
    unreadable: str | None = None

    @property
    def origin(self) -> Origin:
        # A negative timestamp is Kafka's "none" (records from before message format v1).
        stamp = (
            datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
            if self.timestamp_ms is not None and self.timestamp_ms >= 0
            else None
        )
        return Origin(self.topic, self.partition, self.offset, stamp)

    @classmethod
    def from_consumer_record(cls, record: ConsumerRecord[bytes, bytes]) -> Record:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple(record.headers or ()),
            unreadable=record.problem
            if isinstance(record, record_reader.UnreadableConsumerRecord)
            else None,
        )


def _key_password(settings: Settings) -> str:
    # Always a callable: without one, OpenSSL prompts on the terminal for an encrypted key
    # (and a pod without a terminal hangs or fails with noise instead of this line).
    if settings.kafka_ssl_key_password is None:
        raise ConfigurationError(
            f"{ENV_PREFIX}KAFKA_SSL_KEY_PASSWORD: the client key is encrypted; set its password"
        )
    return settings.kafka_ssl_key_password.get_secret_value()


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every client: the broker's certificate is verified, its name too."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            password=lambda: _key_password(settings),
        )
    except ssl.SSLError as exc:
        # e.g. a wrong key password, or a key that does not match the certificate
        raise ConfigurationError(
            f"{ENV_PREFIX}KAFKA_SSL_CERTFILE/KEYFILE: cannot load the client certificate "
            "and key: a wrong CLEANUP_KAFKA_SSL_KEY_PASSWORD, or a key that is not the "
            f"certificate's ({exc.reason or type(exc).__name__})"
        ) from None
    if not settings.kafka_ssl_check_hostname:
        log.warning("kafka.tls.hostname_unchecked")
        context.check_hostname = False
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by every client we create."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.require_kafka(),
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": ssl_context(settings),
        "retry_backoff_ms": settings.kafka_retry_backoff_ms,
    }
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


# While records flow, a fetch asks the broker for at least this many bytes: it answers as soon
# as they are there (a backlog: full fetches at once) or after the gather wait (a trickle).
GATHER_MIN_BYTES = 64 * 1024


class _PositionedConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, gather_ms: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gather_ms = gather_ms
        self._gathering = False
        self._long_poll: tuple[int, int] | None = None  # the fetcher's own (min bytes, wait)

    def pace(self, records_per_s: float) -> None:
        """Fetches gather while records arrive at least one per gather wait on average: the
        broker holds each fetch up to that wait for more, so that a stream makes one batch
        every few milliseconds instead of one per record (a batch costs this process and the
        database the same round trips whatever its size), and no record waits behind a fetch
        long-polling for others. Slower, a fetch long-polls and answers on the first record,
        so that an idle worker does not poll the broker every few milliseconds.

        Sets what aiokafka's fetcher reads for each fetch request it builds (pinned with
        aiokafka, see record_reader.py).
        """
        on = bool(self._gather_ms) and records_per_s * self._gather_ms >= 1000
        if on == self._gathering:
            return
        fetcher = self._fetcher
        if self._long_poll is None:
            self._long_poll = (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms)
        gathering = (GATHER_MIN_BYTES, self._gather_ms)
        fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = gathering if on else self._long_poll
        self._gathering = on

    def consumed_position(self, partition: TopicPartition) -> int | None:
        """Where the next fetch of `partition` starts, without I/O: past the last record
        `getmany` returned and past the control markers and aborted batches it skipped
        (read_committed), or None when not known (not assigned, or no position yet).

        aiokafka's async `position()` says the same, but waits for a position it lacks; this
        reads the state it reads (pinned with aiokafka, see record_reader.py).
        """
        subscription = self._subscription.subscription
        if subscription is None:
            return None
        state = subscription.assignment.state_value(partition)
        if state is None or not state.has_valid_position:
            return None
        position: int = state.position
        return position

    async def committed_offsets(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets (one request for all; `committed()` asks one by one)."""
        found = await self._coordinator.fetch_committed_offsets(list(partitions))
        return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


def group_consumer(settings: Settings, **overrides: Any) -> GroupConsumer:
    """The live group's consumer. Offsets are committed by hand, after the database commit."""
    record_reader.install()
    options = {
        **client_options(settings),
        "group_id": settings.kafka_group_id,
        "enable_auto_commit": False,
        # A new group starts at the beginning: a missed removal is a key left alive.
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.batch_max_records,
        "fetch_max_wait_ms": max(settings.batch_wait_ms, 10),
        "isolation_level": "read_committed",
        **overrides,
    }
    consumer: GroupConsumer = _PositionedConsumer(gather_ms=settings.batch_gather_ms, **options)
    return consumer


def standalone_consumer(settings: Settings, **overrides: Any) -> PartitionReader:
    """A consumer outside any group (manual assignment), for replay and dead-letter reads."""
    record_reader.install()
    options = {
        **client_options(settings),
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        **overrides,
    }
    reader: PartitionReader = AIOKafkaConsumer(**options)
    return reader


# A producer batch: the notice relay's 500 rows (about 270 KB) fill one per partition, so one
# produce request carries them all; at the 16 KiB default each wave of batches waited for the
# previous request's answer (one request in flight per broker). Well under the broker's and
# the topics' default limit on a batch (message.max.bytes, max.message.bytes: 1 MiB).
MAX_BATCH_BYTES = 256 * 1024


def producer(settings: Settings) -> Producer:
    """An idempotent producer that waits for all in-sync replicas: a dead letter must not vanish."""
    idempotent: Producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        max_batch_size=MAX_BATCH_BYTES,
    )
    return idempotent
