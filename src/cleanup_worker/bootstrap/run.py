"""The composition root of `cleanup-worker run`: the consumer loop with its pool, dead-letter
producer and handler, and its companions (late-key sweep, notice relay, invariant watch), as
one `RunProcess` with its probes."""

from __future__ import annotations

import asyncio
import gc
from contextlib import AsyncExitStack
from functools import partial

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from cleanup_worker.adapters.kafka import clients as kafka
from cleanup_worker.adapters.kafka.clients import Producer
from cleanup_worker.adapters.kafka.dead_letter_topic import DeadLetterPublisher
from cleanup_worker.adapters.kafka.group_progress import GroupProgress
from cleanup_worker.adapters.postgres import connections as postgres
from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.bootstrap.key_table import install_key_table_from
from cleanup_worker.observability.health import Health
from cleanup_worker.retries import Reachability, retrying
from cleanup_worker.service.apply.change_events import ChangeEventClassifier
from cleanup_worker.service.apply.classify import RecordClassifier
from cleanup_worker.service.apply.handler import BatchHandler
from cleanup_worker.service.run.consumer import ConsumerLoop
from cleanup_worker.service.run.invariant import InvariantWatch
from cleanup_worker.service.run.late_keys import LateKeySweeper
from cleanup_worker.service.run.process import ConsumerParts, RunProcess, run_until_signalled
from cleanup_worker.service.run.relay import NoticeRelay
from cleanup_worker.settings import Settings


async def start_producer(settings: Settings, stack: AsyncExitStack) -> Producer:
    """The idempotent producer (dead letters, notices), started (waiting for the broker)."""
    producer = kafka.producer(settings)
    # Closed even if a stop request interrupts the start (stop() is safe before start()).
    stack.push_async_callback(producer.stop)
    async for attempt in retrying(
        "kafka.producer.start", on=KafkaError, wait_max=settings.retry_max_wait_s
    ):
        with attempt:
            await producer.start()
    return producer


async def notice_relay(
    settings: Settings,
    producer: Producer,
    stack: AsyncExitStack,
    *,
    database: Reachability | None = None,
) -> NoticeRelay | None:
    """The outbox relay, on connections of its own (one it keeps for its batches, one for its
    backlog gauge), when notices are on ("Revocation notices", docs/design.md): it never
    takes, or waits for, a connection of the consumer's."""
    if settings.revocations_topic is None:
        return None
    pool = await postgres.create_pool(settings, max_size=2, reachable=database)
    stack.push_async_callback(pool.close)
    return NoticeRelay(
        pool,
        producer,
        topic=settings.revocations_topic,
        event_type=settings.revocation_event_type,
        source=settings.revocation_event_source,
        batch_size=settings.relay_batch_size,
        retry_max_wait_s=settings.retry_max_wait_s,
        database=database,
    )


def build_handler(
    settings: Settings,
    pool: Pool,
    dead_letters: DeadLetterPublisher | None,
    health: Health | None = None,
    relay: NoticeRelay | None = None,
    *,
    database: Reachability | None = None,
) -> BatchHandler:
    return BatchHandler(
        pool,
        classify=RecordClassifier(
            types=settings.event_types,
            max_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
            changes=ChangeEventClassifier(settings.cdc_mapping, settings.cdc_topics)
            if settings.cdc_topics
            else None,
        ),
        announce=settings.announce_revocations,
        on_revoked=relay.wake if relay else None,
        dead_letters=dead_letters,
        retry_max_wait_s=settings.retry_max_wait_s,
        note_late_keys=settings.late_keys == "revoke",
        on_db_trouble=health.database_trouble if health else None,
        on_db_ok=health.database_recovered if health else None,
        database=database,
    )


async def late_key_sweeper(
    settings: Settings,
    pool: Pool,
    stack: AsyncExitStack,
    relay: NoticeRelay | None,
    *,
    database: Reachability | None = None,
) -> LateKeySweeper:
    """The late-key sweep, with R6's clients to the brokers (started) unless R6 is off."""
    progress = None
    if settings.late_keys == "revoke":
        # read_uncommitted: the end of a partition is then its high-water mark, not its last
        # stable offset, so a transaction left open (a re-add inside it, perhaps) holds R6
        # back instead of counting as consumed (group_progress.py).
        consumer = kafka.standalone_consumer(settings, isolation_level="read_uncommitted")
        admin = AIOKafkaAdminClient(**kafka.client_options(settings))
        for name, client in (("consumer", consumer), ("admin", admin)):
            async for attempt in retrying(
                f"kafka.late_keys.{name}.start", on=KafkaError, wait_max=settings.retry_max_wait_s
            ):
                with attempt:
                    await client.start()
        stack.push_async_callback(consumer.stop)
        stack.push_async_callback(admin.close)
        progress = GroupProgress(consumer, admin, settings.kafka_group_id, settings.consumed_topics)
    return LateKeySweeper(
        pool,
        progress=progress,
        settle_s=settings.late_key_settle_s,
        interval_s=settings.late_key_sweep_interval_s,
        retry_max_wait_s=settings.retry_max_wait_s,
        announce=settings.announce_revocations,
        on_revoked=relay.wake if relay else None,
        database=database,
        clock_skew_s=settings.keys_clock_skew_s,
    )


async def invariant_watch(
    settings: Settings, stack: AsyncExitStack, *, database: Reachability | None = None
) -> InvariantWatch | None:
    """The invariant watch on a connection of its own (it holds its lock), unless it is off."""
    if settings.invariant_interval_s == 0:
        return None
    pool = await postgres.create_pool(settings, max_size=1, reachable=database)
    stack.push_async_callback(pool.close)
    return InvariantWatch(
        pool,
        interval_s=settings.invariant_interval_s,
        max_busy_fraction=settings.invariant_max_busy_fraction,
    )


async def build_consumer(
    settings: Settings, health: Health, stack: AsyncExitStack
) -> ConsumerParts:
    """The live group's consumer loop with its pool, dead-letter producer and handler, and its
    companions: the late-key sweep, and the notice relay when notices are on."""
    database = postgres.reachability(settings)
    stack.push_async_callback(database.close)
    # One connection more for the late-key sweep.
    pool = await postgres.create_pool(
        settings, max_size=settings.database_pool_size + 1, reachable=database, batches=True
    )
    stack.push_async_callback(pool.close)
    await install_key_table_from(pool, settings)
    producer = await start_producer(settings, stack)
    dead_letters = DeadLetterPublisher(
        producer,
        settings.dlq_topic,
        settings.kafka_group_id,
        settings.retry_max_wait_s,
        on_blocked=health.dead_letters_blocked,
        on_flowing=health.dead_letters_flowing,
    )
    relay = await notice_relay(settings, producer, stack, database=database)
    sweeper = await late_key_sweeper(settings, pool, stack, relay, database=database)
    watch = await invariant_watch(settings, stack, database=database)
    consumer_loop = ConsumerLoop(
        consumer=kafka.group_consumer(settings),
        handler=build_handler(settings, pool, dead_letters, health, relay, database=database),
        health=health,
        topics=settings.consumed_topics,
        max_records=settings.batch_max_records,
        wait_ms=settings.batch_wait_ms,
        max_in_flight=settings.in_flight,
        rebalance_drain_s=settings.rebalance_drain_s,
        retry_max_wait_s=settings.retry_max_wait_s,
        new_consumer=partial(kafka.group_consumer, settings),
    )
    if relay is not None:
        relay.defer_to(lambda: consumer_loop.catching_up)
    return ConsumerParts(
        consumer_loop=consumer_loop,
        ping_database=partial(postgres.ping, pool),
        companions=tuple(c for c in (sweeper, relay, watch) if c is not None),
    )


# aiokafka's request timeout (its default): how long a request on a stalled link may hang.
KAFKA_REQUEST_TIMEOUT_S = 40.0


def _wait_limit_s(settings: Settings) -> float:
    """How long the poll loop may wait on one batch and its commit before /livez calls it
    wedged: a stalled statement and its rollback each end after the command timeout, a stalled
    commit request after the Kafka request timeout; beyond those, something is truly stuck."""
    stalls = 2 * postgres.command_timeout_s(settings) + KAFKA_REQUEST_TIMEOUT_S
    return settings.liveness_timeout_s + stalls


def run_process(settings: Settings) -> RunProcess:
    """`cleanup-worker run`, wired and not yet started."""
    return RunProcess(
        partial(build_consumer, settings),
        Health(settings.liveness_timeout_s, wait_limit_s=_wait_limit_s(settings)),
        http_host=settings.http_host,
        http_port=settings.http_port,
        shutdown_grace_s=settings.shutdown_grace_s,
    )


async def run_worker(settings: Settings) -> None:
    """Runs until SIGTERM/SIGINT, then drains and returns (exit code 0)."""
    process = run_process(settings)
    freezing = asyncio.create_task(_freeze_once_started(process))
    try:
        await run_until_signalled(process)
    finally:
        freezing.cancel()


async def _freeze_once_started(process: RunProcess) -> None:
    """Once the worker runs, what start-up built (modules, clients, pools: most of the heap)
    is moved out of the cyclic collector's reach. Otherwise every full collection walks it
    all: 20-50 ms with the event loop stopped, several times a minute at a steady rate, and
    the revocation lag's p99 (docs/performance.md). Only in the `run` process: a test
    process that starts many workers would keep their garbage for good."""
    await process.started.wait()
    gc.collect()
    gc.freeze()
