"""Kafka for tests: publish events and raw records, read topics and the group's offsets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError

from cleanup_worker.domain.events import MembershipEvent
from cleanup_worker.settings import Settings
from testkit.events import binary, structured


@dataclass
class Publisher:
    producer: AIOKafkaProducer
    topic: str

    async def events(
        self, events: Iterable[MembershipEvent], *, partition: int | None = None, mode: str = "s"
    ) -> None:
        # Pipelined: the idempotent producer keeps per-partition order.
        pending = []
        for e in events:
            value, headers = structured(e) if mode == "s" else binary(e)
            pending.append(
                await self.producer.send(
                    self.topic,
                    value=value,
                    key=f"{e.account_id}/{e.iam_id}".encode(),
                    headers=headers,
                    partition=partition,
                )
            )
        await asyncio.gather(*pending)

    async def raw(
        self,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        *,
        key: bytes | None = b"raw",
        partition: int | None = None,
    ) -> None:
        await self.producer.send_and_wait(
            self.topic, value=value, key=key, headers=headers or [], partition=partition
        )


async def send_null_record(
    producer: AIOKafkaProducer, topic: str, partition: int, headers: list[tuple[str, bytes | None]]
) -> Any:
    """Produces a record with neither key nor value, as Kafka (and kcat, or the Java client)
    allow; aiokafka's send() refuses one, its batch API does not. Returns its metadata."""
    batch = producer.create_batch()
    assert batch.append(timestamp=None, key=None, value=None, headers=headers) is not None
    return await (await producer.send_batch(batch, topic, partition=partition))


@asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        yield Publisher(producer, settings.kafka_topics[0])
    finally:
        await producer.stop()


async def publish(
    settings: Settings, events: list[MembershipEvent], *, per_s: float | None = None
) -> None:
    """Publishes `events` to the settings' topic: all at once, or `per_s` a second (in tens)
    so that a fault lands while records flow."""
    async with publisher(settings) as pub:
        if per_s is None:
            await pub.events(events)
            return
        for i in range(0, len(events), 10):
            await pub.events(events[i : i + 10])
            await asyncio.sleep(10 / per_s)


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The live group's committed offset per partition of the events topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        # On a fresh broker the first group lookup creates __consumer_offsets, and the
        # coordinator is "not available" until it has: ask again.
        async with asyncio.timeout(30):
            while True:
                try:
                    offsets = await admin.list_consumer_group_offsets(settings.kafka_group_id)
                    break
                except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
                    await asyncio.sleep(0.2)
    finally:
        await admin.close()
    topic = settings.kafka_topics[0]
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def all_committed(settings: Settings) -> bool:
    """Every record in a partition of the settings' topic that has any is committed by the
    settings' group."""
    ends = {p: offset for p, offset in (await end_offsets(settings)).items() if offset}
    return await committed_offsets(settings) == ends


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


async def end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        name = topic or settings.kafka_topics[0]
        partitions = await topic_partitions(settings, name)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record now in `topic` (all partitions), oldest first per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(settings, topic)
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
    finally:
        await consumer.stop()
    return records


async def create_topic(settings: Settings, name: str, partitions: int = 3) -> str:
    """A new topic on the test broker (the broker does not auto-create topics)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name
