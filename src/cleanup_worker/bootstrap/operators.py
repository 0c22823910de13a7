"""The composition root of the one-shot programs: `migrate`, `backfill`, and the operators'
`replay`, `dlq`, `explain`, `report` and `doctor`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from cleanup_worker.adapters.kafka import clients as kafka
from cleanup_worker.adapters.postgres import connections as postgres
from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.migrator import Migration, migrate
from cleanup_worker.bootstrap.key_table import (
    connect_with_key_table,
    install_key_table,
    install_key_table_from,
)
from cleanup_worker.bootstrap.run import build_handler
from cleanup_worker.errors import ServiceUnavailable
from cleanup_worker.service.apply.handler import BatchHandler
from cleanup_worker.service.backfill.job import Backfill
from cleanup_worker.service.backfill.job import run_until_signalled as run_backfill_until_signalled
from cleanup_worker.service.backfill.options import BackfillRequest
from cleanup_worker.service.backfill.summary import Reporter, Summary
from cleanup_worker.service.doctor.run import Diagnosis, diagnose
from cleanup_worker.service.explain import Explanation, explain_key, explain_member
from cleanup_worker.service.report.figures import build_report, invariant
from cleanup_worker.settings import Settings


async def migrate_database(settings: Settings) -> list[Migration]:
    """`cleanup-worker migrate`: the migrations, on one connection."""
    mapping = settings.key_table
    mapped = None if mapping.is_default else KeyTable(mapping).name
    async with postgres.connect(settings) as conn:
        return await migrate(conn, mapped_table=mapped)


def backfill_job(
    settings: Settings, request: BackfillRequest, reporter: Reporter | None = None
) -> Backfill:
    """`cleanup-worker backfill`, wired and not yet started: it opens one connection at a
    time (a new one after a lost one), the way `postgres.connect` does for `migrate`."""
    return Backfill(
        partial(connect_with_key_table, settings),
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
        await install_key_table_from(pool, settings)
        yield OperatorClients(consumer, admin, pool, build_handler(settings, pool, None))


async def explain(
    settings: Settings, *, member: tuple[str, str] | None, key_id: str | None
) -> Explanation:
    """`cleanup-worker explain`: one read-only connection, as the operator's login."""
    async with postgres.connect(settings) as conn:
        await install_key_table(conn, settings)
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
        await install_key_table(conn, settings)
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
