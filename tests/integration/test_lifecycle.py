"""The worker as a process: drained by SIGTERM, killed by SIGKILL, outliving a database restart."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from cleanup_worker.settings import Settings
from testkit.database import (
    assert_no_offset_ahead_of_ledger,
    ledger_size,
    lock_waiters,
    revoked_keys,
    seed_key,
    seed_keys_for,
    until_lock_waiters,
)
from testkit.events import at, event, removals
from testkit.kafka import committed_offsets, end_offsets, publish, publisher
from testkit.key_rows import live_count
from testkit.key_tables import member, over_key_tables
from testkit.metrics import scrape
from testkit.outages import restart_dev_service
from testkit.processes import http_get, running_worker, spawn_worker
from testkit.services import Services
from testkit.waiting import eventually, until_logged

STREAM = 3000


async def _applied_some(db: Any) -> bool:
    return await ledger_size(db) > 0


async def _all_revoked(db: Any, count: int) -> bool:
    return await live_count(db) == 0 and (await ledger_size(db) == count)


@pytest.mark.timeout(180)
async def test_sigterm_mid_stream_drains_and_exits_zero(settings: Settings, db: Any) -> None:
    """SIGTERM while consuming: exit 0 within the grace, and every committed offset's effects
    are in the database (nothing committed ahead of its transaction)."""
    events = removals(STREAM)
    await seed_keys_for(db, events)
    await publish(settings, events)
    worker = await spawn_worker(settings, CLEANUP_BATCH_MAX_RECORDS="100")

    await eventually(lambda: _applied_some(db), timeout=60)
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(worker.communicate(), timeout=settings.shutdown_grace_s)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    assert time.monotonic() - sent < settings.shutdown_grace_s
    committed = await committed_offsets(settings)
    assert sum(committed.values()) > 0
    await assert_no_offset_ahead_of_ledger(db, committed)
    assert b"worker.stopped" in stderr


@pytest.mark.timeout(180)
@over_key_tables
async def test_sigkill_mid_stream_then_restart_ends_right(settings: Settings, db: Any) -> None:
    """A worker SIGKILLed mid-stream and restarted ends with every event applied once."""
    events = [event("removed", *member("acct", f"user-{i}"), at(10)) for i in range(STREAM)]
    await seed_keys_for(db, events)
    await publish(settings, events)
    first = await spawn_worker(settings, CLEANUP_BATCH_MAX_RECORDS="100")

    async def started() -> bool:
        return await ledger_size(db) > 200

    await eventually(started, timeout=60)
    first.kill()
    await first.wait()
    assert await ledger_size(db) < STREAM, "the stream finished before the kill; make it longer"
    await assert_no_offset_ahead_of_ledger(db, await committed_offsets(settings))
    second = await spawn_worker(settings)
    try:

        async def finished() -> bool:
            return await _all_revoked(db, STREAM)

        await eventually(finished, timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        await second.wait()
    assert second.returncode == 0
    assert await committed_offsets(settings) == await end_offsets(settings)


async def _http_status(port: int, path: str) -> int:
    status, _ = await http_get(port, path)
    return status


@pytest.mark.timeout(180)
async def test_postgres_restart_mid_stream_loses_nothing(
    settings: Settings, services: Services, database_url: str
) -> None:
    """PostgreSQL restarted while events flow: readiness drops, the worker resumes by itself,
    and every event is applied."""
    db = await asyncpg.connect(database_url)
    events = removals(STREAM)
    await seed_keys_for(db, events)
    await db.close()
    async with running_worker(settings) as process:
        assert process.http is not None
        assert process.http.port is not None
        port = process.http.port

        async def ready() -> bool:
            return await _http_status(port, "/readyz") == 200

        await eventually(ready)
        publishing = asyncio.create_task(publish(settings, events))
        db = await asyncpg.connect(database_url)
        try:
            await eventually(lambda: _applied_some(db), timeout=60, interval=0.05)
        finally:
            await db.close()
        restart = asyncio.create_task(restart_dev_service("postgres", pause_s=3))

        async def not_ready() -> bool:
            return await _http_status(port, "/readyz") == 503

        await eventually(not_ready, interval=0.05)
        assert await _http_status(port, "/livez") == 200
        await restart
        await publishing
        db = await asyncpg.connect(database_url)
        try:

            async def finished() -> bool:
                return await _all_revoked(db, STREAM)

            await eventually(finished, timeout=90)
        finally:
            await db.close()
        await eventually(ready)


@pytest.mark.timeout(240)
async def test_broker_restart_mid_stream_loses_nothing(
    settings: Settings, services: Services, db: Any
) -> None:
    """The Kafka broker restarted between two halves of a stream: readiness drops while it is
    away, the worker carries on by itself, and every event is applied and committed."""
    events = removals(STREAM)
    await seed_keys_for(db, events)
    async with running_worker(settings) as process:
        assert process.http is not None
        assert process.http.port is not None
        port = process.http.port
        await publish(settings, events[: STREAM // 2])

        async def first_half() -> bool:
            return await ledger_size(db) == STREAM // 2

        await eventually(first_half, timeout=60)
        restart = asyncio.create_task(restart_dev_service("kafka", pause_s=3))

        async def not_ready() -> bool:
            return await _http_status(port, "/readyz") == 503

        await eventually(not_ready, timeout=60, interval=0.2)
        assert await _http_status(port, "/livez") == 200
        await restart
        await publish(settings, events[STREAM // 2 :])

        async def finished() -> bool:
            return await _all_revoked(db, STREAM)

        await eventually(finished, timeout=120)

        async def ready() -> bool:
            return await _http_status(port, "/readyz") == 200

        await eventually(ready, timeout=60)

        async def committed() -> bool:
            return await committed_offsets(settings) == await end_offsets(settings)

        await eventually(committed, timeout=60)


async def test_livez_fails_when_the_poll_loop_is_wedged(settings: Settings) -> None:
    """/livez turns 503 when no poll happened for longer than the liveness timeout."""
    wedged = settings.model_copy(update={"liveness_timeout_s": 0.5})
    async with running_worker(wedged) as process:
        assert process.http is not None
        assert process.http.port is not None
        assert process.consumer_loop is not None
        assert await _http_status(process.http.port, "/livez") == 200
        # Simulate aiokafka's known hang: the next fetch never returns.
        release = asyncio.Event()

        async def hang(*_: Any, **__: Any) -> dict[Any, Any]:
            await release.wait()
            return {}

        process.consumer_loop.consumer.getmany = hang  # type: ignore[method-assign]  # the hang itself
        port = process.http.port

        async def dead() -> bool:
            return await _http_status(port, "/livez") == 503

        await eventually(dead, timeout=10)
        release.set()


async def test_metrics_parse_and_move_with_traffic(settings: Settings, db: Any) -> None:
    """/metrics parses as Prometheus text and its counters move when events are applied."""
    await seed_key(db, "acct", "alice", at(0))
    applied_labels = {"outcome": "applied", "type": "account.member.removed"}
    revoked = {"reason": "member_removed"}
    moved = [
        ("cleanup_events_total", applied_labels),
        ("cleanup_keys_revoked_total", revoked),
        ("cleanup_revocation_lag_seconds_count", {}),
    ]
    async with running_worker(settings) as process, publisher(settings) as pub:
        assert process.http is not None
        assert process.http.port is not None
        port = process.http.port
        before = await scrape(port)
        await pub.events([event("removed", "acct", "alice", at(5))])

        async def counted() -> bool:
            now = await scrape(port)
            return all(
                now.value(name, labels) > before.value(name, labels) for name, labels in moved
            )

        await eventually(counted)
        after = await scrape(port)
    for name, labels in moved:
        assert after.value(name, labels) == before.value(name, labels) + 1, name
    assert await ledger_size(db) == 1
    assert await revoked_keys(db)


@pytest.mark.timeout(180)
async def test_rebalance_during_a_stuck_batch_neither_cancels_it_nor_crashes(
    settings: Settings, db: Any, database_url: str
) -> None:
    """A second replica joins while the first one's batch waits on a member lock: the bounded
    drain gives up, the batch goes on, nobody crashes, and every event ends applied."""
    quick_drain = settings.model_copy(update={"rebalance_drain_s": 1.0})
    events = removals(300)
    await seed_keys_for(db, events)
    blocker = await asyncpg.connect(database_url)
    try:
        await blocker.execute("INSERT INTO member_locks VALUES ('acct', 'user-0')")
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM member_locks WHERE iam_id = 'user-0' FOR UPDATE")
        async with running_worker(quick_drain):
            await publish(quick_drain, events)
            blocked = await until_lock_waiters(db, "member_locks")
            with capture_logs() as logs:
                async with running_worker(quick_drain):
                    timeout = await until_logged(logs, "kafka.rebalance.drain_timeout")
                    assert timeout["seconds"] == quick_drain.rebalance_drain_s
                    still = blocked & await lock_waiters(db, "member_locks")
                    assert still, "the drain cancelled the batch waiting on the lock"
                    await holding.rollback()

                    async def finished() -> bool:
                        return await _all_revoked(db, len(events))

                    await eventually(finished, timeout=90)
    finally:
        await blocker.close()
