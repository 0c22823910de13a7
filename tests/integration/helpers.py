"""Small tools the integration tests share: make events, seed keys, run a worker, wait."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cleanup_worker.bootstrap import worker_process
from cleanup_worker.domain.events import Change, MembershipEvent
from cleanup_worker.service.process import WorkerProcess
from cleanup_worker.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(
    change: Change | str,
    account_id: str,
    iam_id: str,
    time: datetime,
    *,
    event_id: str | None = None,
    source: str = "/accounts",
) -> MembershipEvent:
    change = Change(change)
    return MembershipEvent(
        source=source,
        id=event_id or uuid.uuid4().hex,
        type=f"account.member.{change.value}",
        change=change,
        time=time,
        account_id=account_id,
        iam_id=iam_id,
    )


def structured(e: MembershipEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    body = {
        "specversion": "1.0",
        "id": e.id,
        "source": e.source,
        "type": e.type,
        "time": e.time.isoformat(),
        "datacontenttype": "application/json",
        "data": {"account_id": e.account_id, "iam_id": e.iam_id},
    }
    return json.dumps(body).encode(), [("content-type", b"application/cloudevents+json")]


def binary(e: MembershipEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", e.id.encode()),
        ("ce_source", e.source.encode()),
        ("ce_type", e.type.encode()),
        ("ce_time", e.time.isoformat().encode()),
        ("content-type", b"application/json"),
    ]
    return json.dumps({"account_id": e.account_id, "iam_id": e.iam_id}).encode(), headers


@dataclass
class Publisher:
    producer: AIOKafkaProducer
    topic: str

    async def events(
        self, events: Iterable[MembershipEvent], *, partition: int | None = None, mode: str = "s"
    ) -> None:
        # Pipelined: the idempotent producer keeps per-partition order.
        pending = []
        for e in events:
            value, headers = structured(e) if mode == "s" else binary(e)
            pending.append(
                await self.producer.send(
                    self.topic,
                    value=value,
                    key=f"{e.account_id}/{e.iam_id}".encode(),
                    headers=headers,
                    partition=partition,
                )
            )
        await asyncio.gather(*pending)

    async def raw(
        self,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
        *,
        key: bytes | None = b"raw",
        partition: int | None = None,
    ) -> None:
        await self.producer.send_and_wait(
            self.topic, value=value, key=key, headers=headers or [], partition=partition
        )


@asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[Publisher]:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        yield Publisher(producer, settings.kafka_topics[0])
    finally:
        await producer.stop()


async def seed_key(
    db: Any, account_id: str, iam_id: str, created_at: datetime, *, name: str = ""
) -> uuid.UUID:
    key_id = uuid.uuid4()
    await db.execute(
        "INSERT INTO api_keys (id, account_id, iam_id, name, key_hash, created_at) "
        "VALUES ($1, $2, $3, $4, 'sha256:test', $5)",
        key_id,
        account_id,
        iam_id,
        name,
        created_at,
    )
    return key_id


async def revoked_keys(db: Any) -> dict[uuid.UUID, tuple[str, str]]:
    rows = await db.fetch(
        "SELECT id, revocation_reason, revoked_by FROM api_keys WHERE revoked_at IS NOT NULL"
    )
    return {row["id"]: (row["revocation_reason"], row["revoked_by"]) for row in rows}


async def ledger_size(db: Any) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM membership_events")
    return count


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, interval: float = 0.1
) -> None:
    """Polls until `check` is true; fails with the timeout otherwise."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(interval)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[WorkerProcess]:
    """A worker in this process, started and later drained as SIGTERM would."""
    process = worker_process(settings)
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
        "CLEANUP_RETRY_MAX_WAIT_S": "0.5",
    }
    env.update(extra)
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


async def committed_offsets(settings: Settings) -> dict[int, int]:
    """The live group's committed offset per partition of the events topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(settings.kafka_group_id)
    finally:
        await admin.close()
    topic = settings.kafka_topics[0]
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def topic_partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(TopicPartition(topic, p["partition"]) for p in described["partitions"])


async def end_offsets(settings: Settings, topic: str | None = None) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        name = topic or settings.kafka_topics[0]
        partitions = await topic_partitions(settings, name)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def read_topic(settings: Settings, topic: str) -> list[Any]:
    """Every record now in `topic` (all partitions), oldest first per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = await topic_partitions(settings, topic)
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for items in batch.values():
                records.extend(items)
    finally:
        await consumer.stop()
    return records


async def database_state(db: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Keys (id, revoked?, reason) and membership rows: what the rules decide."""
    keys = await db.fetch(
        "SELECT id, revoked_at IS NOT NULL AS revoked, revocation_reason FROM api_keys ORDER BY id"
    )
    rows = await db.fetch(
        "SELECT account_id, iam_id, state, member_since, changed_at FROM account_memberships "
        "ORDER BY account_id, iam_id"
    )
    return [tuple(r) for r in keys], [tuple(r) for r in rows]
