"""Change data capture for tests: a membership table of its own in the directory database,
captured by a Debezium connector of its own on the dev Kafka Connect (`scripts/dev-services
up --cdc`), so that each test sees only its own changes, snapshot included."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest
from dotenv import dotenv_values

from cleanup_worker.settings import Settings
from testkit.kafka import create_topic
from testkit.services import ROOT
from testkit.waiting import eventually

HOW_TO = "no Kafka Connect for the CDC tests: run `scripts/dev-services up --cdc`"


def cdc_env() -> dict[str, str]:
    """What `up --cdc` wrote to .dev/cdc.env, overridden by the environment."""
    values = {k: v for k, v in dotenv_values(ROOT / ".dev" / "cdc.env").items() if v}
    values.update({k: v for k, v in os.environ.items() if k.startswith("CDC_")})
    if "CDC_CONNECT_URL" not in values:
        pytest.fail(f"{HOW_TO} (no .dev/cdc.env)", pytrace=False)
    return values


@dataclass
class SourceTable:
    """A captured table: run SQL on it, restart its connector, read where it goes."""

    name: str
    topic: str
    connector: str
    connect_url: str
    source: Any  # asyncpg connection to the directory database
    config: dict[str, str]

    async def execute(self, sql: str, *args: Any) -> Any:
        return await self.source.execute(sql.replace("{table}", self.name), *args)

    async def fetch(self, sql: str, *args: Any) -> Any:
        return await self.source.fetch(sql.replace("{table}", self.name), *args)

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            url = f"{self.connect_url}/connectors/{self.connector}/status"
            async with http.get(url) as response:
                result: dict[str, Any] = await response.json()
                return result

    async def register_again(self) -> None:
        """After a restart of the standalone worker (it keeps offsets, not REST configs)."""
        await register(self.connect_url, self.connector, self.config)
        await eventually(self.running, timeout=60)

    async def running(self) -> bool:
        try:
            tasks = (await self.status()).get("tasks") or []
        except (aiohttp.ClientError, ValueError):
            return False
        return bool(tasks) and tasks[0].get("state") == "RUNNING"


def _config(
    env: dict[str, str], name: str, table: str, prefix: str, schemas: bool
) -> dict[str, str]:
    url = urlsplit(env["CDC_SOURCE_DATABASE_URL"])
    flag = "true" if schemas else "false"
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "database.hostname": url.hostname or "127.0.0.1",
        "database.port": str(url.port or 5432),
        "database.dbname": url.path.lstrip("/"),
        "database.user": env["CDC_REPLICATION_USER"],
        "database.password": env["CDC_REPLICATION_PASSWORD"],
        "topic.prefix": prefix,
        "table.include.list": f"public.{table}",
        "plugin.name": "pgoutput",
        "publication.name": f"pub_{table}",
        "publication.autocreate.mode": "disabled",
        "slot.name": f"slot_{table}",
        "snapshot.mode": "initial",
        # Debezium waits up to poll.interval.ms (500 ms by default) for more changes before
        # handing a batch to Connect: the floor of every removal's latency (docs/cdc.md).
        "poll.interval.ms": "50",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": flag,
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": flag,
    }


async def register(connect_url: str, name: str, config: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{connect_url}/connectors/{name}/config"
        try:
            async with http.put(url, json=config) as response:
                if response.status >= 300:
                    pytest.fail(f"Connect refused {name}: {await response.text()}")
        except aiohttp.ClientError as exc:
            pytest.fail(f"{HOW_TO}: {exc!r}", pytrace=False)


async def _unregister(connect_url: str, name: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.delete(f"{connect_url}/connectors/{name}"),
    ):
        pass


@asynccontextmanager
async def source_table(
    settings: Settings,
    *,
    schemas: bool = False,
    rows: Sequence[str] = (),
    time_type: str = "timestamp",
    connect_url: str | None = None,
    extra: dict[str, str] | None = None,
) -> AsyncIterator[SourceTable]:
    """A fresh table (id PK, account_id, iam_id, state, role, changed_at), `rows` inserted
    before the connector starts (its snapshot reads them), captured into a fresh topic."""
    env = cdc_env()
    suffix = uuid.uuid4().hex[:10]
    table, prefix, name = f"members_{suffix}", f"cdc_{suffix}", f"test-{suffix}"
    login = env["CDC_REPLICATION_USER"]
    source = await asyncpg.connect(env["CDC_SOURCE_DATABASE_URL"])
    await source.execute(
        f"CREATE TABLE public.{table} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "account_id text NOT NULL, iam_id text NOT NULL, state text NOT NULL DEFAULT 'active', "
        f"role text NOT NULL DEFAULT 'member', changed_at {time_type} NOT NULL "
        "DEFAULT clock_timestamp());"
        f"CREATE PUBLICATION pub_{table} FOR TABLE public.{table};"
        f"GRANT SELECT ON public.{table} TO {login};"
    )
    config = {**_config(env, name, table, prefix, schemas), **(extra or {})}
    topic = f"{prefix}.public.{table}"
    connect_url = connect_url or env["CDC_CONNECT_URL"]
    handle = SourceTable(table, topic, name, connect_url, source, config)
    for statement in rows:
        await handle.execute(statement)
    await create_topic(settings, handle.topic)
    await register(connect_url, name, config)
    try:
        await eventually(handle.running, timeout=60)
        yield handle
    finally:
        await _unregister(connect_url, name)
        await _drop(source, table)
        await source.close()


async def _drop(source: Any, table: str) -> None:
    async def dropped() -> bool:
        try:
            await source.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = $1",
                f"slot_{table}",
            )
        except asyncpg.ObjectInUseError:
            return False  # the task is still stopping
        return True

    await eventually(dropped, timeout=30, interval=0.5)
    await source.execute(f"DROP PUBLICATION IF EXISTS pub_{table}; DROP TABLE public.{table}")


def cdc_settings(settings: Settings, topic: str, **extra: Any) -> Settings:
    """The test's worker settings, consuming `topic` as change events of the table."""
    return settings.model_copy(
        update={
            "cdc_topics": [topic],
            "cdc_state_column": "state",
            "cdc_removed_states": ["removed"],
            **extra,
        }
    )


async def offsets_flushed(source: SourceTable, since: float) -> None:
    """Waits until the standalone worker has flushed this connector's offsets after `since`
    (a time.time()): a restart then resumes from there instead of snapshotting afresh."""
    path = ROOT / ".dev" / "connect" / "offsets"
    server = source.config["topic.prefix"].encode()

    async def flushed() -> bool:
        try:
            return path.stat().st_mtime > since and server in path.read_bytes()
        except FileNotFoundError:
            return False

    await eventually(flushed, timeout=30, interval=0.2)


def kill_connect() -> None:
    """SIGKILL the dev Kafka Connect (ours: started by scripts/dev-services): no offset flush."""
    pid = int((ROOT / ".dev" / "connect.pid").read_text().strip())
    os.kill(pid, signal.SIGKILL)


async def start_connect() -> None:
    """`scripts/dev-services up` (CDC mode sticks): Connect again, connectors as registered."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / "scripts" / "dev-services"), "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"dev-services up failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


@asynccontextmanager
async def distributed_connect(bootstrap: str) -> AsyncIterator[str]:
    """A distributed Kafka Connect worker of its own with exactly-once source support (the
    dev worker is standalone, which cannot run it), from the dev worker's jars and plugins.
    Yields its REST URL; stopped (SIGTERM, ours) afterwards."""
    from testkit.processes import free_port  # noqa: PLC0415

    connect = ROOT / ".dev" / "connect"
    if not (connect / "lib").is_dir():
        pytest.fail(f"{HOW_TO} (no .dev/connect/lib)", pytrace=False)
    suffix = uuid.uuid4().hex[:8]
    port = free_port()
    work = connect / f"eos-{suffix}"
    work.mkdir(parents=True)
    config = work / "worker.properties"
    config.write_text(
        f"bootstrap.servers={bootstrap}\n"
        f"listeners=http://127.0.0.1:{port}\n"
        f"group.id=eos-connect-{suffix}\n"
        f"plugin.path={connect / 'plugins'}\n"
        f"config.storage.topic=eos-connect-{suffix}-configs\n"
        f"offset.storage.topic=eos-connect-{suffix}-offsets\n"
        f"status.storage.topic=eos-connect-{suffix}-status\n"
        "config.storage.replication.factor=1\noffset.storage.replication.factor=1\n"
        "status.storage.replication.factor=1\noffset.storage.partitions=1\n"
        "status.storage.partitions=1\n"
        "exactly.once.source.support=enabled\n"
        "key.converter=org.apache.kafka.connect.json.JsonConverter\n"
        "value.converter=org.apache.kafka.connect.json.JsonConverter\n"
    )
    found = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "kafka"), "--java", stdout=asyncio.subprocess.PIPE
    )
    java = (await found.communicate())[0].decode().strip()
    log = (work / "connect.out").open("wb")
    process = await asyncio.create_subprocess_exec(
        java, "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
        f"-Dlog4j2.configurationFile={connect / 'log4j2.properties'}",
        "-cp", f"{connect / 'lib'}/*",
        "org.apache.kafka.connect.cli.ConnectDistributed", str(config),
        stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        if process.returncode is not None:
            pytest.fail(f"distributed Connect exited; see {work / 'connect.out'}")
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{url}/connector-plugins") as r:
                return "PostgresConnector" in await r.text()
        except aiohttp.ClientError:
            return False

    try:
        await eventually(ready, timeout=120, interval=0.5)
        yield url
    finally:
        process.terminate()
        await process.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
