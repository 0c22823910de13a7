"""Small tools the integration tests share: make events, seed keys, run a worker, wait."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from cleanup_worker.bootstrap import WorkerProcess
from cleanup_worker.domain.events import Change, MembershipEvent
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
        for e in events:
            value, headers = structured(e) if mode == "s" else binary(e)
            await self.producer.send_and_wait(
                self.topic,
                value=value,
                key=f"{e.account_id}/{e.iam_id}".encode(),
                headers=headers,
                partition=partition,
            )

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
    process = WorkerProcess(settings)
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
