"""The programs under test: a worker in this process, or `cleanup-worker` as a real process."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from pydantic import SecretStr

from cleanup_worker.bootstrap import backfill_job, run_process
from cleanup_worker.bootstrap.key_table import install_key_table
from cleanup_worker.service.backfill.options import BackfillRequest
from cleanup_worker.service.backfill.summary import Summary
from cleanup_worker.service.run.process import RunProcess
from cleanup_worker.settings import Settings
from testkit import key_tables
from testkit.waiting import eventually


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[RunProcess]:
    """A worker in this process, started and later drained as SIGTERM would."""
    process = run_process(settings)
    task = asyncio.create_task(process.serve())
    started = asyncio.create_task(process.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert started in done, "worker did not start within 60 s"
    try:
        yield process
    finally:
        process.request_stop()
        await asyncio.wait_for(task, timeout=settings.shutdown_grace_s + 5)


def backfill_settings(database_url: str) -> Settings:
    """Settings for a backfill in this process on `database_url` (it needs no broker), on the
    active key table (testkit/key_tables.py)."""
    plain = Settings(database_url=SecretStr(database_url), log_format="json", retry_max_wait_s=0.5)
    return key_tables.active().configure(plain)


async def run_backfill(database_url: str, **request: Any) -> Summary:
    """A backfill in this process that executes, with no --max-fraction brake unless the
    request sets one (small data sets are mostly orphaned)."""
    options = {"execute": True, "max_fraction": 1.0, **request}
    settings = backfill_settings(database_url)
    conn = await asyncpg.connect(database_url)
    try:  # as the program does first: the key table checked and installed for the process
        await install_key_table(conn, settings)
    finally:
        await conn.close()
    return await backfill_job(settings, BackfillRequest(**options)).run()


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a `cleanup-worker` subprocess needs to act like `settings`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CLEANUP_DATABASE_URL": settings.database_url.get_secret_value(),
        "CLEANUP_KAFKA_BOOTSTRAP_SERVERS": settings.require_kafka(),
        "CLEANUP_KAFKA_TOPICS": ",".join(settings.kafka_topics),
        "CLEANUP_DLQ_TOPIC": settings.dlq_topic,
        "CLEANUP_KAFKA_GROUP_ID": settings.kafka_group_id,
        "CLEANUP_HTTP_PORT": "0",
        "CLEANUP_HTTP_HOST": "127.0.0.1",
        "CLEANUP_LOG_FORMAT": "json",
        "CLEANUP_RETRY_MAX_WAIT_S": str(settings.retry_max_wait_s),
    }
    if "PYTHONPATH" in os.environ:
        # A benchmark of another tree's sources (PYTHONPATH=<tree>/src) runs that tree's
        # worker too, not the installed one.
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    if settings.revocations_topic:
        env["CLEANUP_REVOCATIONS_TOPIC"] = settings.revocations_topic
    for name in ("late_keys", "late_key_settle_s", "late_key_sweep_interval_s"):
        if getattr(settings, name) != Settings.model_fields[name].default:
            env[f"CLEANUP_{name.upper()}"] = str(getattr(settings, name))
    if settings.cdc_topics:
        env["CLEANUP_CDC_TOPICS"] = ",".join(settings.cdc_topics)
        env["CLEANUP_CDC_REMOVED_STATES"] = ",".join(settings.cdc_removed_states)
    for name in ("cdc_account_column", "cdc_user_column", "cdc_state_column", "cdc_time_column"):
        if getattr(settings, name) is not None:
            env[f"CLEANUP_{name.upper()}"] = str(getattr(settings, name))
    env.update(key_table_env(settings))
    env.update(security_env(settings))
    env.update(extra)
    return env


def key_table_env(settings: Settings) -> dict[str, str]:
    """The `CLEANUP_KEYS_*` settings that differ from our own table's (an absent optional
    column as an empty value)."""
    env = {}
    for name, spec in Settings.model_fields.items():
        value = getattr(settings, name)
        if name.startswith("keys_") and value != spec.get_default(call_default_factory=True):
            text = ",".join(value) if isinstance(value, list) else str(value or "")
            env[f"CLEANUP_{name.upper()}"] = text
    return env


def security_env(settings: Settings) -> dict[str, str]:
    """The Kafka security settings as `CLEANUP_*` variables (none but the protocol for
    PLAINTEXT)."""
    values: dict[str, object] = {
        "KAFKA_SECURITY_PROTOCOL": settings.kafka_security_protocol,
        "KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "KAFKA_SASL_PASSWORD": settings.kafka_sasl_password,
        "KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
        "KAFKA_SSL_KEY_PASSWORD": settings.kafka_ssl_key_password,
    }
    env = {}
    for name, value in values.items():
        if value is not None:
            plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"CLEANUP_{name}"] = plain
    return env


async def cli(settings: Settings, *args: str, **extra: str) -> tuple[int, str, str]:
    """Runs `cleanup-worker ARGS` as a real process with the test's settings."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cleanup_worker",
        *args,
        env=worker_env(settings, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def spawn_worker(settings: Settings, **extra: str) -> asyncio.subprocess.Process:
    """`cleanup-worker run` as a real process (so it can be SIGTERMed or SIGKILLed)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cleanup_worker",
        "run",
        env=worker_env(settings, **extra),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def free_port() -> int:
    """A loopback port free now (for a worker subprocess's HTTP server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until_ready(ports: Sequence[int], *, timeout: float = 120.0) -> None:
    """Waits until every worker on `ports` answers /readyz 200 in the same round: each one
    holds partitions (their group has formed) and its services answer."""

    async def all_ready() -> bool:
        for port in ports:
            try:
                status, _ = await http_get(port, "/readyz")
            except OSError:  # not listening yet
                return False
            if status != 200:
                return False
        return True

    await eventually(all_ready, timeout=timeout, interval=0.2)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH: the status and the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        await writer.drain()
        raw = (await reader.read()).decode()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition("\r\n\r\n")
    return int(head.split()[1]), body
