"""Keys that slip past a removal, through the real broker and database: the R1 re-check and
"R6 late keys" (docs/design.md), with the worker as it runs."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from cleanup_worker.service.run.late_keys import (
    CLOCK_MARGIN,
    RULE_LATE_KEY,
    RULE_RECHECK,
)
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys
from testkit.events import event
from testkit.kafka import create_topic, publisher, read_topic
from testkit.key_rows import created_of, insert_key
from testkit.key_tables import member, over_key_tables
from testkit.metrics import sample
from testkit.processes import running_worker
from testkit.waiting import eventually, until_database_clock, until_grown

SETTLE_S = 1.0


def late_settings(settings: Settings, **changes: Any) -> Settings:
    """The test's settings with a short settle delay."""
    return settings.model_copy(update={"late_key_settle_s": SETTLE_S, **changes})


def now() -> datetime:
    return datetime.now(UTC)


async def create_key(conn: Any, account_id: str, iam_id: str) -> Any:
    """Inserts a key the way a key service does: its created column is the transaction's
    start (the column's default), in the test's key table, for the member of these names."""
    return await insert_key(conn, *member(account_id, iam_id), None)


async def wait_for_ledger(db: Any, count: int) -> None:
    async def done() -> bool:
        return await ledger_size(db) >= count

    await eventually(done)


async def wait_revoked(db: Any, key_id: Any, timeout: float) -> None:
    async def revoked() -> bool:
        return key_id in await revoked_keys(db)

    await eventually(revoked, timeout=timeout, interval=0.05)


def counted(rule: str) -> float:
    return sample("cleanup_late_keys_revoked_total", {"rule": rule})


def sweeps() -> float:
    """Sweeps completed in this process (by any in-process replica), R6's part included."""
    return sample("cleanup_late_key_sweep_duration_seconds_count")


async def until_swept(times: int) -> None:
    """Waits until the sweep has run `times` more times from now (whatever it would have done
    by then, it has done)."""
    await until_grown(sweeps, times, timeout=30)


async def r6_waiting(*, at_least: int = 0, at_most: int | None = None) -> bool:
    """Whether the latest sweep reported that many due late keys waiting for the group."""
    waiting = sample("cleanup_late_keys_waiting")
    return waiting >= at_least and (at_most is None or waiting <= at_most)


async def until_window_past(db: Any, created: datetime) -> None:
    """Waits until the sweep's window (less its clock margin) starts after `created`: the
    sweep has looked at a key created then for the last time."""

    async def past() -> bool:
        return bool(
            await db.fetchval(
                "SELECT window_start - $2::interval > $1 FROM late_key_sweep",
                created,
                CLOCK_MARGIN,
            )
        )

    await eventually(past, timeout=30, interval=0.05)


@asynccontextmanager
async def open_transaction(database_url: str) -> AsyncIterator[Any]:
    """A key service's connection with a transaction begun (committed by the caller)."""
    conn = await asyncpg.connect(database_url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        yield conn, transaction
    finally:
        await conn.close()


@over_key_tables
async def test_key_committed_after_its_removal_is_revoked_within_two_seconds(
    settings: Settings, db: Any, database_url: str
) -> None:
    """A key whose transaction began before the removal was produced, and committed after
    the sweep's clock margin had passed and the sweep had run meanwhile, is revoked as R1
    would have within 2 s of its commit."""
    before = counted(RULE_RECHECK)
    async with (
        publisher(settings) as pub,
        running_worker(settings),
        open_transaction(database_url) as (key_service, creating),
    ):
        key = await create_key(key_service, "acct", "alice")
        removal = event("removed", *member("acct", "alice"), now())
        await pub.events([removal])
        await wait_for_ledger(db, 1)
        created = await created_of(key_service, key)
        await until_database_clock(db, created + CLOCK_MARGIN + timedelta(seconds=1))
        await until_swept(times=2)
        await creating.commit()
        await wait_revoked(db, key, timeout=2.0)
    assert await revoked_keys(db) == {key: ("member_removed", removal.ref)}
    assert counted(RULE_RECHECK) - before == 1


@over_key_tables
async def test_key_created_after_removal_is_revoked_after_settle(
    settings: Settings, db: Any
) -> None:
    """A key created after its owner's removal was applied and swept past, the member still
    removed, is revoked as orphaned within the settle delay + 2 s, naming the removal."""
    settings = late_settings(settings)
    before = counted(RULE_LATE_KEY)
    async with publisher(settings) as pub, running_worker(settings):
        removal = event("removed", *member("acct", "alice"), now())
        await pub.events([removal])
        await wait_for_ledger(db, 1)
        await until_swept(times=2)
        key = await create_key(db, "acct", "alice")
        await wait_revoked(db, key, timeout=SETTLE_S + 2)
    assert await revoked_keys(db) == {key: ("orphaned", removal.ref)}
    assert counted(RULE_LATE_KEY) - before == 1


async def test_removal_that_arrives_after_a_later_key_makes_it_late(
    settings: Settings, db: Any
) -> None:
    """A removal dated before a key, arriving after the sweep has looked at the key for the
    last time, still makes the key late: revoked as orphaned after the settle delay."""
    settings = late_settings(settings)
    async with publisher(settings) as pub, running_worker(settings):
        key = await create_key(db, "acct", "alice")
        created = await created_of(db, key)
        await until_window_past(db, created)
        removal = event("removed", "acct", "alice", created - timedelta(seconds=1))
        await pub.events([removal])
        await wait_for_ledger(db, 1)
        await wait_revoked(db, key, timeout=SETTLE_S + 2)
    assert await revoked_keys(db) == {key: ("orphaned", removal.ref)}


async def _split_assignment(
    worker_consumer: Any, stalled: AIOKafkaConsumer
) -> tuple[TopicPartition, TopicPartition]:
    """One partition the worker owns and one the stalled member owns, once both have some."""

    async def split() -> bool:
        mine, theirs = worker_consumer.assignment(), stalled.assignment()
        return bool(mine) and bool(theirs) and not (mine & theirs)

    await eventually(split)
    return min(worker_consumer.assignment()), min(stalled.assignment())


async def test_re_add_produced_before_the_key_but_held_back_wins(
    settings: Settings, db: Any
) -> None:
    """A re-add produced before the key was created, on a partition whose group member is
    stuck, keeps R6 waiting (and saying so); once the re-add is consumed the key never is
    revoked."""
    settings = late_settings(settings)
    async with publisher(settings) as pub, running_worker(settings) as process:
        assert process.consumer_loop is not None
        # A replica that holds its partitions without consuming them: a stuck member.
        stalled = AIOKafkaConsumer(
            settings.kafka_topics[0],
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.kafka_group_id,
            enable_auto_commit=False,
        )
        await stalled.start()
        try:
            mine, theirs = await _split_assignment(process.consumer_loop.consumer, stalled)
            removal = event("removed", "acct", "alice", now())
            await pub.events([removal], partition=mine.partition)
            await wait_for_ledger(db, 1)
            await pub.events([event("added", "acct", "alice", now())], partition=theirs.partition)
            key = await create_key(db, "acct", "alice")
            # R6 finds the key past its settle delay and waits for the stuck member ...
            await eventually(lambda: r6_waiting(at_least=1), timeout=SETTLE_S + 10)
            await until_swept(times=2)  # ... and keeps waiting, sweep after sweep
            assert await revoked_keys(db) == {}
            assert sample("cleanup_late_keys_waiting") >= 1
        finally:
            await stalled.stop()  # leaves the group: the worker takes the partition over
        await wait_for_ledger(db, 2)
        await eventually(lambda: r6_waiting(at_most=0), timeout=SETTLE_S + 10)
        await until_swept(times=2)  # R6 has looked again since the group caught up
    assert key not in await revoked_keys(db)
    assert await db.fetchval("SELECT state FROM account_memberships") == "active"


async def test_re_add_produced_after_the_settle_delay_loses(settings: Settings, db: Any) -> None:
    """A key created while its owner was removed is revoked; a re-add produced after the
    settle delay does not bring it back (by design: the delay bounds how long R6 waits)."""
    settings = late_settings(settings)
    async with publisher(settings) as pub, running_worker(settings):
        removal = event("removed", "acct", "alice", now())
        await pub.events([removal])
        await wait_for_ledger(db, 1)
        key = await create_key(db, "acct", "alice")
        await wait_revoked(db, key, timeout=SETTLE_S + 2)
        await pub.events([event("added", "acct", "alice", now())])
        await wait_for_ledger(db, 2)
    assert await revoked_keys(db) == {key: ("orphaned", removal.ref)}
    assert await db.fetchval("SELECT state FROM account_memberships") == "active"


async def test_keys_that_appear_while_the_worker_is_down_are_handled_when_it_returns(
    settings: Settings, db: Any, database_url: str
) -> None:
    """A concurrent key committed and a late key created while no worker runs are revoked
    (R1 re-check, R6) once a worker starts again."""
    settings = late_settings(settings)
    async with open_transaction(database_url) as (key_service, creating):
        concurrent = await create_key(key_service, "acct", "alice")
        async with publisher(settings) as pub, running_worker(settings):
            removal = event("removed", "acct", "alice", now())
            await pub.events([removal])
            await wait_for_ledger(db, 1)
        await creating.commit()
    late = await create_key(db, "acct", "alice")
    late_created = await created_of(db, late)
    await until_database_clock(db, late_created + timedelta(seconds=SETTLE_S))
    assert await revoked_keys(db) == {}
    async with running_worker(settings):
        await wait_revoked(db, concurrent, timeout=10)
        await wait_revoked(db, late, timeout=10)
    assert await revoked_keys(db) == {
        concurrent: ("member_removed", removal.ref),
        late: ("orphaned", removal.ref),
    }


async def test_three_replicas_revoke_each_late_key_once(
    settings: Settings, db: Any, database_url: str
) -> None:
    """With three replicas in the group, every concurrent and late key is revoked exactly
    once (counted once, one revoked_by: its member's removal)."""
    settings = late_settings(settings)
    members = [("acct", f"user{i}") for i in range(6)]
    before = counted(RULE_RECHECK) + counted(RULE_LATE_KEY)
    async with (
        running_worker(settings),
        running_worker(settings),
        running_worker(settings),
        publisher(settings) as pub,
        open_transaction(database_url) as (key_service, creating),
    ):
        concurrent = {await create_key(key_service, a, u): (a, u) for a, u in members}
        removals = {(a, u): event("removed", a, u, now()) for a, u in members}
        await pub.events(removals.values())
        await wait_for_ledger(db, len(members))
        await creating.commit()
        late = {await create_key(db, a, u): (a, u) for a, u in members}
        owners = {**concurrent, **late}

        async def all_revoked() -> bool:
            return len(await revoked_keys(db)) == len(owners)

        await eventually(all_revoked, timeout=SETTLE_S + 10)
        await until_swept(times=3)  # any second revocation would be counted by now
    expected = {
        key: ("member_removed" if key in concurrent else "orphaned", removals[owner].ref)
        for key, owner in owners.items()
    }
    assert await revoked_keys(db) == expected
    assert counted(RULE_RECHECK) + counted(RULE_LATE_KEY) - before == len(owners)


async def test_late_key_revocations_are_announced(
    settings: Settings, db: Any, database_url: str
) -> None:
    """With notices on, a key revoked by the re-check and one revoked by R6 are each
    announced once, with their reason and revoked_by ("Revocation notices", docs/design.md)."""
    topic = await create_topic(settings, f"test-notices-{uuid.uuid4().hex[:12]}")
    settings = late_settings(settings, revocations_topic=topic)
    async with (
        publisher(settings) as pub,
        running_worker(settings),
        open_transaction(database_url) as (key_service, creating),
    ):
        concurrent = await create_key(key_service, "acct", "alice")
        removal = event("removed", "acct", "alice", now())
        await pub.events([removal])
        await wait_for_ledger(db, 1)
        await creating.commit()
        late = await create_key(db, "acct", "alice")

        async def announced() -> bool:
            return len(await read_topic(settings, topic)) >= 2

        await eventually(announced, timeout=SETTLE_S + 10)
    notices = [json.loads(record.value) for record in await read_topic(settings, topic)]
    announced_as = sorted(
        (n["subject"], n["data"]["reason"], n["data"]["revoked_by"]) for n in notices
    )
    assert announced_as == sorted(
        [(str(concurrent), "member_removed", removal.ref), (str(late), "orphaned", removal.ref)]
    )
