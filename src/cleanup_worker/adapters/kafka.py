"""aiokafka clients built from settings, and the broker-neutral record the services work on."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.helpers import create_ssl_context

from cleanup_worker.adapters.cloudevents import Header
from cleanup_worker.settings import Settings


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as the services see it: where it came from, and its bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]

    @property
    def origin(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

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
        )


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
    )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by every client we create."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.require_kafka(),
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": _ssl_context(settings),
    }
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def group_consumer(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """The live group's consumer. Offsets are committed by hand, after the database commit."""
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
    return AIOKafkaConsumer(**options)


def standalone_consumer(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer outside any group (manual assignment), for replay and dead-letter reads."""
    options = {
        **client_options(settings),
        "group_id": None,
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        **overrides,
    }
    return AIOKafkaConsumer(**options)


def producer(settings: Settings) -> AIOKafkaProducer:
    """An idempotent producer that waits for all in-sync replicas: a dead letter must not vanish."""
    return AIOKafkaProducer(**client_options(settings), acks="all", enable_idempotence=True)
