"""The notice relay against the real broker and database: it defers to a consumer that is
catching up ("The outbox", docs/design.md), then announces everything, and on a stop announces
what is left before it ends."""

from __future__ import annotations

import asyncio
import json
import uuid
from contextlib import AsyncExitStack
from typing import Any

from cleanup_worker.bootstrap.run import notice_relay, start_producer
from cleanup_worker.settings import Settings
from testkit.database import outbox_notices
from testkit.events import at
from testkit.kafka import create_topic, read_topic
from testkit.waiting import eventually

BATCH = 10
ROWS = 25
PER_ROW = 5  # a removal's keys: one revoking statement's row


async def write_outbox(db: Any, notices: int) -> set[uuid.UUID]:
    """`notices` notices in rows of PER_ROW, as revoking statements write them."""
    keys = [uuid.uuid4() for _ in range(notices)]
    for start in range(0, notices, PER_ROW):
        ids = [str(key) for key in keys[start : start + PER_ROW]]
        n = len(ids)
        await db.execute(
            "INSERT INTO revocation_outbox_batches (notices, key_ids, account_ids, iam_ids, "
            "reasons, revoked_ats, revoked_bys, event_times) "
            "VALUES ($7, $1, $2, $3, $4, $5, $6, $5)",
            ids,
            ["acct"] * n,
            ["u1"] * n,
            ["member_removed"] * n,
            [at(0)] * n,
            ["test"] * n,
            n,
        )
    return set(keys)


async def write_single_rows(db: Any, notices: int) -> set[uuid.UUID]:
    """`notices` rows of the previous version's outbox (migration 0009), one per key."""
    keys = {uuid.uuid4() for _ in range(notices)}
    await db.executemany(
        "INSERT INTO revocation_outbox (key_id, account_id, iam_id, reason, revoked_at, "
        "revoked_by, event_time) VALUES ($1, 'acct', 'u1', 'member_removed', $2, 'test', $2)",
        [(str(key), at(0)) for key in keys],
    )
    return keys


async def outbox_size(db: Any) -> int:
    """Notices waiting in either table."""
    single: int = await db.fetchval("SELECT count(*) FROM revocation_outbox")
    return single + await outbox_notices(db)


async def test_relay_takes_one_batch_while_the_consumer_catches_up(
    settings: Settings, db: Any
) -> None:
    """While the consumer is busy the relay stops after one batch; once it is not, the rest
    follows."""
    topic = f"test-relay-{uuid.uuid4().hex[:12]}"
    await create_topic(settings, topic)
    settings = settings.model_copy(update={"revocations_topic": topic, "relay_batch_size": BATCH})
    keys = await write_outbox(db, ROWS)
    busy = True
    looked = 0

    def consumer_busy() -> bool:
        nonlocal looked
        looked += 1
        return busy

    async with AsyncExitStack() as stack:
        producer = await start_producer(settings, stack)
        relay = await notice_relay(settings, producer, stack)
        assert relay is not None
        relay.defer_to(consumer_busy, at_most_s=300)
        running = asyncio.create_task(relay.run())
        try:
            # Parked: one batch published, and the relay keeps asking whether it may go on.
            await eventually(lambda: asyncio.sleep(0, relay.published == BATCH and looked >= 5))
            assert relay.published == BATCH
            assert await outbox_size(db) == ROWS - BATCH
            busy = False
            await eventually(lambda: asyncio.sleep(0, relay.published == ROWS))
        finally:
            relay.request_stop()
            await running
    assert await outbox_size(db) == 0
    ids = {json.loads(r.value)["id"] for r in await read_topic(settings, topic)}
    assert ids == {f"revoked:{key}" for key in keys}


async def test_a_stop_publishes_what_the_outbox_holds_before_the_relay_ends(
    settings: Settings, db: Any
) -> None:
    """Asked to stop while parked behind a busy consumer, the relay still announces every row
    in the outbox before `run` returns, instead of leaving them for the next replica."""
    topic = f"test-relay-{uuid.uuid4().hex[:12]}"
    await create_topic(settings, topic)
    settings = settings.model_copy(update={"revocations_topic": topic, "relay_batch_size": BATCH})
    keys = await write_outbox(db, ROWS)
    async with AsyncExitStack() as stack:
        producer = await start_producer(settings, stack)
        relay = await notice_relay(settings, producer, stack)
        assert relay is not None
        relay.defer_to(lambda: True, at_most_s=300)
        running = asyncio.create_task(relay.run())
        await eventually(lambda: asyncio.sleep(0, relay.published == BATCH))
        relay.request_stop()
        async with asyncio.timeout(10):
            await running
    assert relay.published == ROWS
    assert await outbox_size(db) == 0
    ids = {json.loads(r.value)["id"] for r in await read_topic(settings, topic)}
    assert ids == {f"revoked:{key}" for key in keys}


async def test_rows_of_the_previous_version_are_announced_and_removed(
    settings: Settings, db: Any
) -> None:
    """Rows a replica of the previous version wrote (one per key, during a rolling upgrade)
    are folded into this version's rows and announced; both tables end empty."""
    topic = f"test-relay-{uuid.uuid4().hex[:12]}"
    await create_topic(settings, topic)
    settings = settings.model_copy(update={"revocations_topic": topic, "relay_batch_size": BATCH})
    keys = await write_single_rows(db, ROWS) | await write_outbox(db, ROWS)
    async with AsyncExitStack() as stack:
        producer = await start_producer(settings, stack)
        relay = await notice_relay(settings, producer, stack)
        assert relay is not None
        running = asyncio.create_task(relay.run())
        try:
            await eventually(lambda: asyncio.sleep(0, relay.published == 2 * ROWS), timeout=30)
        finally:
            relay.request_stop()
            await running
    assert await outbox_size(db) == 0
    ids = [json.loads(r.value)["id"] for r in await read_topic(settings, topic)]
    assert sorted(ids) == sorted(f"revoked:{key}" for key in keys)
