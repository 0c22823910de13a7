"""Where the tests and the benchmarks get a real PostgreSQL and a real Kafka broker
(docs/design.md, "Real services in tests").

In order: the `CLEANUP_DATABASE_URL` / `CLEANUP_KAFKA_BOOTSTRAP_SERVERS` the caller set; else
testcontainers when a Docker engine answers; else the project's own `scripts/dev-services`
(started here if it is not up). Nothing is ever skipped: without a service the tests fail
and say how to get one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from dotenv import dotenv_values

from cleanup_worker.adapters.postgres.migrator import migrate

ROOT = Path(__file__).resolve().parent.parent
HOW_TO = (
    "no PostgreSQL/Kafka for the tests: run `scripts/dev-services up` (or `make services`), "
    "or set CLEANUP_DATABASE_URL and CLEANUP_KAFKA_BOOTSTRAP_SERVERS"
)


@dataclass(frozen=True)
class Services:
    database_url: str
    kafka_bootstrap_servers: str
    origin: str


def _from_environment() -> Services | None:
    db = os.environ.get("CLEANUP_DATABASE_URL")
    kafka = os.environ.get("CLEANUP_KAFKA_BOOTSTRAP_SERVERS")
    if db and kafka:
        return Services(db, kafka, "environment")
    return None


def _docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - only when wanted

        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - no engine, for whatever reason, means "use something else"
        return False
    return True


def _from_testcontainers(stack: ExitStack) -> Services:
    from testcontainers.kafka import KafkaContainer  # noqa: PLC0415
    from testcontainers.postgres import PostgresContainer  # noqa: PLC0415

    postgres = stack.enter_context(PostgresContainer("postgres:17", driver=None))
    kafka = stack.enter_context(KafkaContainer("apache/kafka:4.1.1").with_kraft())
    return Services(postgres.get_connection_url(), kafka.get_bootstrap_server(), "testcontainers")


def dev_env(path: Path = ROOT / ".dev" / "env") -> dict[str, str]:
    """The `CLEANUP_*` variables `scripts/dev-services up` wrote (the one reader of .dev/env)."""
    return {key: value for key, value in dotenv_values(path).items() if value is not None}


def _from_dev_services() -> Services:
    script = ROOT / "scripts" / "dev-services"
    # Output goes to a file, not a pipe: the daemons it starts must not hold our pipe open.
    with tempfile.TemporaryFile(mode="w+") as output:
        result = subprocess.run(
            [str(script), "up"], stdout=output, stderr=subprocess.STDOUT, check=False, timeout=600
        )
        output.seek(0)
        printed = output.read()
    env_file = ROOT / ".dev" / "env"
    if result.returncode != 0 or not env_file.exists():
        tail = "\n".join(printed.splitlines()[-15:])
        pytest.fail(f"{HOW_TO}\n`scripts/dev-services up` failed:\n{tail}", pytrace=False)
    values = dev_env(env_file)
    return Services(
        values["CLEANUP_DATABASE_URL"], values["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"], "dev-services"
    )


def discover(stack: ExitStack) -> Services:
    found = _from_environment()
    if found:
        return found
    if _docker_answers():
        return _from_testcontainers(stack)
    return _from_dev_services()


def with_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def service_env() -> dict[str, str]:
    """For the benchmarks and the chaos runner: CLEANUP_DATABASE_URL and
    CLEANUP_KAFKA_BOOTSTRAP_SERVERS from the environment, else from `.dev/env` (run
    `scripts/dev-services up` first)."""
    env_file = ROOT / ".dev" / "env"
    values = dev_env(env_file) if env_file.exists() else {}
    for key in ("CLEANUP_DATABASE_URL", "CLEANUP_KAFKA_BOOTSTRAP_SERVERS"):
        if os.environ.get(key):
            values[key] = os.environ[key]
        if not values.get(key):
            raise SystemExit(f"{key} is not set: run `scripts/dev-services up` first")
    return values


@asynccontextmanager
async def scratch_database(admin_url: str, prefix: str) -> AsyncIterator[str]:
    """A freshly migrated database that is dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(admin_url, name)
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
