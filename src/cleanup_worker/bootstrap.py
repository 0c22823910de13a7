"""The composition root: the one place that turns settings into connected objects.

Every program builds what it needs here, from the one `Settings` object: the `run` process
(consumer loop, late-key sweep, notice relay, probes), the backfill (`backfill`), the operator
clients (`replay`, `dlq`), the migration connection (`migrate`). Nothing here runs anything
for long: lifecycles live in `service/`. What each program sets up once before it builds
anything (logs, retry hooks) is startup.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any
from uuid import UUID

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from cleanup_worker.adapters.kafka import clients as kafka
from cleanup_worker.adapters.kafka.clients import Producer
from cleanup_worker.adapters.kafka.dead_letter_topic import DeadLetterPublisher
from cleanup_worker.adapters.kafka.group_progress import GroupProgress
from cleanup_worker.adapters.postgres import connections as postgres
from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.adapters.postgres.migrator import Migration, migrate
from cleanup_worker.errors import ServiceUnavailable
from cleanup_worker.observability.health import Health
from cleanup_worker.retries import Reachability, retrying
from cleanup_worker.service.apply.change_events import ChangeEventClassifier
from cleanup_worker.service.apply.classify import RecordClassifier
from cleanup_worker.service.apply.handler import BatchHandler
from cleanup_worker.service.backfill.job import Backfill
from cleanup_worker.service.backfill.job import run_until_signalled as run_backfill_until_signalled
from cleanup_worker.service.backfill.options import BackfillRequest
from cleanup_worker.service.backfill.summary import Reporter, Summary
from cleanup_worker.service.doctor.run import Diagnosis, diagnose
from cleanup_worker.service.explain import Explanation, explain_key, explain_member
from cleanup_worker.service.report.figures import build_report, invariant
from cleanup_worker.service.run.consumer import ConsumerLoop
from cleanup_worker.service.run.invariant import InvariantWatch
from cleanup_worker.service.run.late_keys import LateKeySweeper
from cleanup_worker.service.run.process import ConsumerParts, RunProcess, run_until_signalled
from cleanup_worker.service.run.relay import NoticeRelay
from cleanup_worker.settings import Settings


async def migrate_database(settings: Settings) -> list[Migration]:
    """`cleanup-worker migrate`: the migrations, on one connection."""
    async with postgres.connect(settings) as conn:
        return await migrate(conn)


def backfill_job(
    settings: Settings, request: BackfillRequest, reporter: Reporter | None = None
) -> Backfill:
    """`cleanup-worker backfill`, wired and not yet started: it opens one connection at a
    time (a new one after a lost one), the way `postgres.connect` does for `migrate`."""
    return Backfill(
        partial(postgres.connect, settings),
        request,
        reporter,
        statement_timeout_ms=settings.database_statement_timeout_ms,
        retry_max_wait_s=settings.retry_max_wait_s,
        announce=settings.announce_revocations,
    )


async def run_backfill(
    settings: Settings, request: BackfillRequest, reporter: Reporter | None = None
) -> Summary:
    """Runs a backfill until it ends, or SIGTERM/SIGINT stop it after the current batch."""
    return await run_backfill_until_signalled(backfill_job(settings, request, reporter))


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
    """The outbox relay, on a connection of its own, when notices are on ("Revocation notices",
    docs/design.md)."""
    if settings.revocations_topic is None:
        return None
    pool = await postgres.create_pool(settings, max_size=1, reachable=database)
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
        settings, max_size=settings.database_pool_size + 1, reachable=database
    )
    stack.push_async_callback(pool.close)
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
        max_in_flight=settings.batches_in_flight,
        rebalance_drain_s=settings.rebalance_drain_s,
        retry_max_wait_s=settings.retry_max_wait_s,
        new_consumer=partial(kafka.group_consumer, settings),
    )
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
    await run_until_signalled(run_process(settings))


@dataclass(frozen=True, slots=True)
class OperatorClients:
    """What `replay` and `dlq` need: a consumer outside any group, an admin client, a small
    pool, and the shared handler without a dead-letter sink."""

    consumer: AIOKafkaConsumer
    admin: AIOKafkaAdminClient
    pool: Pool
    handler: BatchHandler


@asynccontextmanager
async def operator_clients(settings: Settings) -> AsyncIterator[OperatorClients]:
    """The operator tools' clients, connected, and closed again on the way out."""
    async with AsyncExitStack() as stack:
        # earliest: an offset that retention removed since the window was resolved reads on
        # from the first one left, instead of jumping to the end.
        consumer = kafka.standalone_consumer(settings, auto_offset_reset="earliest")
        admin = AIOKafkaAdminClient(**kafka.client_options(settings))
        try:
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            await admin.start()
            stack.push_async_callback(admin.close)
        except KafkaError as exc:
            raise ServiceUnavailable(f"Kafka unreachable ({type(exc).__name__})") from None
        try:
            async with asyncio.timeout(settings.database_connect_timeout_s):
                pool = await postgres.create_pool(settings, max_size=2)
        except TimeoutError:
            raise ServiceUnavailable(
                f"database unreachable after {settings.database_connect_timeout_s:g}s"
            ) from None
        stack.push_async_callback(pool.close)
        yield OperatorClients(consumer, admin, pool, build_handler(settings, pool, None))


async def explain(
    settings: Settings, *, member: tuple[str, str] | None, key_id: UUID | None
) -> Explanation:
    """`cleanup-worker explain`: one read-only connection, as the operator's login."""
    async with postgres.connect(settings) as conn:
        if key_id is not None:
            return await explain_key(conn, key_id, notices_on=settings.announce_revocations)
        assert member is not None
        return await explain_member(conn, *member, notices_on=settings.announce_revocations)


async def report(
    settings: Settings, start: datetime, end: datetime, slo_s: float, *, assess: bool
) -> dict[str, Any]:
    """`cleanup-worker report`, as the operator's login: the period's figures and, on a second
    connection at the same time, the invariant's assessment (both read every key)."""
    async with postgres.connect(settings) as conn:
        if not assess:
            return await build_report(conn, start, end, slo_s, assess=False)
        async with postgres.connect(settings) as other:
            document, found = await asyncio.gather(
                build_report(conn, start, end, slo_s, assess=False), invariant(other)
            )
    document["invariant"] = found
    return document


async def doctor(settings: Settings) -> Diagnosis:
    """`cleanup-worker doctor`: the database's and the broker's checks, writing nothing."""
    return await diagnose(settings)
