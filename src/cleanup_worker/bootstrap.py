"""The composition root: the one place that turns settings into connected objects."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack, suppress
from typing import Any

import stamina
from aiokafka.errors import KafkaError

from cleanup_worker.adapters import kafka, postgres
from cleanup_worker.adapters.dlq import DeadLetterPublisher
from cleanup_worker.adapters.migrator import Migration, migrate
from cleanup_worker.logging import get_logger
from cleanup_worker.observability.health import Health
from cleanup_worker.observability.http import HealthServer
from cleanup_worker.service.consumer import Worker
from cleanup_worker.service.handler import BatchHandler
from cleanup_worker.settings import Settings

log = get_logger(__name__)


async def migrate_database(settings: Settings) -> list[Migration]:
    async with postgres.connect(settings) as conn:
        return await migrate(conn)


async def start_producer(settings: Settings, stack: AsyncExitStack) -> DeadLetterPublisher:
    producer = kafka.producer(settings)
    async for attempt in stamina.retry_context(
        on=KafkaError, attempts=None, timeout=None, wait_max=settings.retry_max_wait_s
    ):
        with attempt:
            await producer.start()
    stack.push_async_callback(producer.stop)
    return DeadLetterPublisher(
        producer, settings.dlq_topic, settings.kafka_group_id, settings.retry_max_wait_s
    )


def build_handler(
    settings: Settings, pool: object, dead_letters: DeadLetterPublisher | None, health: Health
) -> BatchHandler:
    def trouble(_: BaseException) -> None:
        health.waiting_on_database = True
        health.database_ok = False

    def recovered() -> None:
        health.waiting_on_database = False
        health.database_ok = True

    return BatchHandler(
        pool,
        types=settings.event_types,
        max_event_bytes=settings.max_event_bytes,
        dead_letters=dead_letters,
        retry_max_wait_s=settings.retry_max_wait_s,
        on_db_trouble=trouble,
        on_db_ok=recovered,
    )


class WorkerProcess:
    """`cleanup-worker run`: HTTP first (so probes answer during start-up), then the database,
    the dead-letter producer and the consumer; a stop request drains within the grace."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.health = Health(settings.liveness_timeout_s)
        self.worker: Worker | None = None
        self.pool: Any = None
        self.http: HealthServer | None = None
        self.started = asyncio.Event()
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.request_stop()

    async def _consume(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        pool = await postgres.create_pool(settings)
        stack.push_async_callback(pool.close)
        self.pool = pool
        self.health.database_ok = True
        dead_letters = await start_producer(settings, stack)
        self.worker = Worker(
            consumer=kafka.group_consumer(settings),
            handler=build_handler(settings, pool, dead_letters, self.health),
            health=self.health,
            topics=settings.kafka_topics,
            max_records=settings.batch_max_records,
            wait_ms=settings.batch_wait_ms,
            max_in_flight=settings.batches_in_flight,
            rebalance_drain_s=settings.rebalance_drain_s,
            retry_max_wait_s=settings.retry_max_wait_s,
        )
        stack.push_async_callback(self.worker.stop, 5.0)
        await self.worker.start()
        self.started.set()
        if self._stop.is_set():
            self.worker.request_stop()
        await self.worker.run()

    async def serve(self) -> None:
        settings = self.settings
        async with AsyncExitStack() as stack:
            self.http = HealthServer(
                self.health, self._ping, self._ping_broker, settings.http_host, settings.http_port
            )
            await self.http.start()
            stack.push_async_callback(self.http.stop)
            consuming = asyncio.create_task(self._consume(stack))
            stopping = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({consuming, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if consuming in done:
                stopping.cancel()
                consuming.result()  # a crash propagates: offsets not committed are redelivered
                return
            if self.worker is None:
                # Still starting (e.g. waiting for the database): nothing to drain.
                consuming.cancel()
                with suppress(asyncio.CancelledError):
                    await consuming
                return
            try:
                # Shield: a slow drain is given the grace, then abandoned (its offsets stay
                # uncommitted, so the records are redelivered, never lost).
                async with asyncio.timeout(max(1.0, settings.shutdown_grace_s - 5.0)):
                    await asyncio.shield(consuming)
            except TimeoutError:
                log.error("worker.drain_timeout", grace_s=settings.shutdown_grace_s)
                consuming.cancel()
                with suppress(asyncio.CancelledError):
                    await consuming

    async def _ping_broker(self) -> bool:
        """A metadata request: the consumer itself retries quietly, so ask the cluster."""
        if self.worker is None:
            return False
        try:
            async with asyncio.timeout(2):
                await self.worker.consumer.topics()
        except Exception:  # noqa: BLE001 - any failure means "not ready"; the caller needs a bool
            return False
        return True

    async def _ping(self) -> bool:
        return self.pool is not None and await postgres.ping(self.pool)


async def run_worker(settings: Settings) -> None:
    """Runs until SIGTERM/SIGINT, then drains and returns (exit code 0)."""
    process = WorkerProcess(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, process.request_stop)
    try:
        await process.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
