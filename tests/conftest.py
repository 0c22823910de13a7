"""Fixtures: real services, a fresh database and fresh topics for every test that asks."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import asyncpg
import psutil
import pytest
import pytest_asyncio
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cleanup_worker.adapters.kafka import errors as kafka_errors
from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.migrator import migrate
from cleanup_worker.retries import install_retry_hooks
from cleanup_worker.settings import Settings
from testkit import key_rows
from testkit.key_tables import NATIVE, SHAPES, KeyTableShape, activate
from testkit.services import HOW_TO, Services, discover, with_database

# One template per test session, so that sessions running side by side never drop each
# other's template.
TEMPLATE_DB = f"cw_template_{os.getpid()}"


async def _drop_stale_templates(conn: Any) -> None:
    """Templates left by sessions that were killed (their process is gone)."""
    rows = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'cw_template_%'")
    for row in rows:
        pid = row["datname"].removeprefix("cw_template_")
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            await conn.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')


async def _drop_template(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
    finally:
        await conn.close()


async def _build_template(admin_url: str) -> None:
    try:
        conn = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"{HOW_TO}\ncannot connect to PostgreSQL: {exc}", pytrace=False)
    try:
        await _drop_stale_templates(conn)
        await conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await conn.close()
    template = await asyncpg.connect(with_database(admin_url, TEMPLATE_DB))
    try:
        await migrate(template)
    finally:
        await template.close()


@pytest.fixture(scope="session", autouse=True)
def _retry_hooks() -> None:
    """In-process workers retry as the programs do: logged and counted once, by our hook."""
    install_retry_hooks(describe=kafka_errors.describe_retry)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The real PostgreSQL and Kafka for this test session, migrated template included."""
    with ExitStack() as stack:
        found = discover(stack)
        asyncio.run(_build_template(found.database_url))
        yield found
        asyncio.run(_drop_template(found.database_url))


@asynccontextmanager
async def fresh_database(services: Services) -> AsyncIterator[str]:
    """A new database cloned from the migrated template, dropped afterwards."""
    name = f"cw_test_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(services.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    yield with_database(services.database_url, name)
    admin = await asyncpg.connect(services.database_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def key_shape(request: pytest.FixtureRequest) -> Iterator[KeyTableShape]:
    """The key table the test runs over: our own `api_keys` unless the test is parametrized
    with `over_key_tables` (testkit/key_tables.py)."""
    shape = SHAPES[getattr(request, "param", NATIVE.name)]
    activate(shape)
    yield shape
    activate(NATIVE)
    # An in-process worker installed the mapped table for the process: later tests that
    # build the adapters themselves expect our own.
    key_table.use(key_table.DEFAULT)


@pytest.fixture
async def database_url(services: Services, key_shape: KeyTableShape) -> AsyncIterator[str]:
    """A fresh, migrated database of its own for one test, holding the test's key table
    (created by its owner and readied with the SQL `migrate` prints, when mapped)."""
    async with fresh_database(services) as url:
        if not key_shape.native:
            conn = await asyncpg.connect(url)
            try:
                await key_rows.install(conn, key_shape, url)
            finally:
                await conn.close()
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Any]:
    """A connection to this test's database, for arranging and asserting."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def fresh_topics(services: Services) -> tuple[str, str]:
    """A new events topic (3 partitions) and its dead-letter topic."""
    suffix = uuid.uuid4().hex[:12]
    events, dlq = f"test-events-{suffix}", f"test-dlq-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=services.kafka_bootstrap_servers)
    try:
        await asyncio.wait_for(admin.start(), 30)
    except (OSError, TimeoutError) as exc:
        pytest.fail(f"{HOW_TO}\ncannot reach Kafka: {exc!r}", pytrace=False)
    try:
        await admin.create_topics(
            [NewTopic(events, 3, 1), NewTopic(dlq, 1, 1)], validate_only=False
        )
    finally:
        await admin.close()
    return events, dlq


@pytest.fixture
async def topics(services: Services) -> tuple[str, str]:
    """A fresh events topic (3 partitions) and its dead-letter topic for one test."""
    return await fresh_topics(services)


def worker_settings(database_url: str, services: Services, topics: tuple[str, str]) -> Settings:
    """Settings for a worker on this database and these topics, in a consumer group of its own."""
    events, dlq = topics
    return Settings(
        database_url=database_url,  # type: ignore[arg-type]  # pydantic converts to SecretStr
        kafka_bootstrap_servers=services.kafka_bootstrap_servers,
        kafka_topics=[events],
        dlq_topic=dlq,
        kafka_group_id=f"test-group-{uuid.uuid4().hex[:8]}",
        http_port=0,
        http_host="127.0.0.1",
        log_format="json",
        batch_wait_ms=50,
        retry_max_wait_s=0.5,
        shutdown_grace_s=10,
    )


@pytest.fixture
def settings(
    database_url: str, services: Services, topics: tuple[str, str], key_shape: KeyTableShape
) -> Settings:
    """Settings for a worker on this test's database and topics, in its own consumer group,
    on the test's key table."""
    return key_shape.configure(worker_settings(database_url, services, topics))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_settings(services: Services) -> AsyncIterator[Settings]:
    """Like `settings`, but one database and one set of topics for a whole test module."""
    async with fresh_database(services) as url:
        yield worker_settings(url, services, await fresh_topics(services))
