"""The real broker answers: a record produced is consumed back, headers intact."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from testkit.services import Services


async def test_kafka_round_trip(services: Services, topics: tuple[str, str]) -> None:
    """A record produced with the idempotent producer comes back from the same partition."""
    events, _ = topics
    producer = AIOKafkaProducer(
        bootstrap_servers=services.kafka_bootstrap_servers, enable_idempotence=True, acks="all"
    )
    await producer.start()
    marker = uuid.uuid4().hex.encode()
    try:
        sent = await producer.send_and_wait(
            events, value=marker, key=b"k", partition=1, headers=[("ce_id", b"1")]
        )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=services.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tp = TopicPartition(events, 1)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.value, record.key, list(record.headers)) == (marker, b"k", [("ce_id", b"1")])
