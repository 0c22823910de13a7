"""While records flow, a fetch gathers them at the broker; when they trickle, it long-polls
and answers on the first record (`pace`, adapters/kafka/clients.py; "A stream gathers into
batches at the broker", docs/design.md). Against the real broker."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from cleanup_worker.adapters.kafka.clients import group_consumer
from cleanup_worker.settings import Settings
from testkit.kafka import create_topic

RECORDS = 200  # sent one a millisecond: a stream of about 200 ms
GATHER_MS = 20


class _Joined(ConsumerRebalanceListener):  # type: ignore[misc]
    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        pass

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


async def fetches_to_read(settings: Settings, records_per_s: float) -> int:
    """How many fetches a consumer told that records arrive at `records_per_s` takes to
    read RECORDS records sent one a millisecond."""
    topic = await create_topic(settings, f"gather-{uuid.uuid4().hex[:8]}", partitions=1)
    consumer = group_consumer(
        settings.model_copy(update={"batch_gather_ms": GATHER_MS}),
        group_id=f"gather-{uuid.uuid4().hex[:8]}",
    )
    consumer.subscribe([topic], listener=_Joined())
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await asyncio.gather(consumer.start(), producer.start())
    try:
        consumer.pace(records_per_s)
        while not consumer.assignment():  # joined the group; nothing to read yet
            assert not await consumer.getmany(timeout_ms=100)
        assert not await consumer.getmany(timeout_ms=300)  # positioned

        async def stream() -> None:
            for i in range(RECORDS):
                await producer.send(topic, f"record {i}".encode())
                await asyncio.sleep(0.001)
            await producer.flush()

        sending = asyncio.create_task(stream())
        read = fetches = 0
        while read < RECORDS:
            fetched = await consumer.getmany(timeout_ms=5_000)
            assert fetched, f"nothing more after {read} records"
            read += sum(len(batch) for batch in fetched.values())
            fetches += 1
        await sending
        return fetches
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())


async def test_a_stream_is_read_in_fetches_that_gather_for_the_gather_wait(
    settings: Settings,
) -> None:
    """About one fetch per gather wait (200 ms of records, a 20 ms wait), where a trickle's
    long-polling fetches answer on the first record each: several times as many."""
    gathered = await fetches_to_read(settings, records_per_s=10_000.0)
    trickled = await fetches_to_read(settings, records_per_s=1.0)
    print(f"fetches: {gathered} gathering, {trickled} long-polling")
    assert gathered <= 40
    assert trickled >= 2 * gathered
