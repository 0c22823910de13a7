"""A transactional producer for tests: aiokafka with a transactional_id of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer

from cleanup_worker.settings import Settings


@asynccontextmanager
async def transactional(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_kafka(), transactional_id=f"t-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()
