"""Producers that compress their batches, with each codec Kafka has, through the real broker."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import Publisher
from testkit.processes import running_worker
from testkit.waiting import eventually


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_events_from_a_compressing_producer_are_applied(
    settings: Settings, db: Any, codec: str
) -> None:
    """A removal and an addition sent in a batch compressed with `codec` are applied (a worker
    without the codec's library cannot read the batch at all, and stops)."""
    key = await seed_key(db, "acct", "alice", at(0))
    removal, addition = (
        event("removed", "acct", "alice", at(5)),
        event("added", "acct", "bob", at(5)),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", compression_type=codec
    )
    await producer.start()
    try:
        async with running_worker(settings):
            await Publisher(producer, settings.kafka_topics[0]).events([removal, addition])

            async def applied() -> bool:
                return await ledger_size(db) == 2

            await eventually(applied)
    finally:
        await producer.stop()
    assert await revoked_keys(db) == {key: ("member_removed", removal.ref)}
