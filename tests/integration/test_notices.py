"""Revocation notices ("Revocation notices", docs/design.md) through the real broker and database:
every revoked key is announced (the set of notice ids is the set of revoked keys), a rolled-back
revocation announces nothing, and a SIGKILL at any point loses no notice."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest

from cleanup_worker.settings import Settings
from testkit.database import outbox_notices, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import create_topic, publisher, read_topic
from testkit.key_rows import owners
from testkit.key_tables import member, over_key_tables
from testkit.outages import start_dev_services, stop_dev_service
from testkit.processes import cli, running_worker, spawn_worker
from testkit.services import Services
from testkit.waiting import eventually

USERS = [f"u{i}" for i in range(12)]
OUTAGE_S = 20


@pytest.fixture
def notices_settings(settings: Settings) -> Settings:
    """The test's settings with notices on, to a topic named for the test (created by it)."""
    return settings.model_copy(
        update={"revocations_topic": f"test-notices-{uuid.uuid4().hex[:12]}"}
    )


@pytest.fixture
async def announcing(notices_settings: Settings) -> Settings:
    """Notices on, their topic created."""
    assert notices_settings.revocations_topic is not None
    await create_topic(notices_settings, notices_settings.revocations_topic)
    return notices_settings


async def notice_ids(settings: Settings) -> list[str]:
    """The ids of every notice on the revocations topic, repeats included."""
    assert settings.revocations_topic is not None
    return [
        json.loads(r.value)["id"] for r in await read_topic(settings, settings.revocations_topic)
    ]


async def seed_story(db: Any) -> None:
    """Two keys for each user, both created before the removals. (A key created after a
    removal is a late key: R6 revokes it too, on a timing of its own; its notices are
    tested with the late keys.)"""
    for user in USERS:
        await seed_key(db, *member("acct", user), at(0))
        await seed_key(db, *member("acct", user), at(1))


def removals() -> list[Any]:
    return [event("removed", *member("acct", user), at(10)) for user in USERS]


async def announced_all(db: Any, settings: Settings) -> bool:
    revoked = await revoked_keys(db)
    ids = set(await notice_ids(settings))
    return (
        bool(revoked) and await outbox_notices(db) == 0 and ids == {f"revoked:{k}" for k in revoked}
    )


@over_key_tables
async def test_every_revoked_key_is_announced_as_the_contract_says(
    announcing: Settings, db: Any
) -> None:
    """R1 revocations: one notice id per revoked key, each the CloudEvent of its row
    (docs/revocations.md), its key_id the key's id as text."""
    settings = announcing
    await seed_story(db)
    async with running_worker(settings), publisher(settings) as pub:
        await pub.events(removals())
        await eventually(lambda: announced_all(db, settings))
    revoked, owner = await revoked_keys(db), await owners(db)
    assert len(revoked) == 2 * len(USERS)
    assert settings.revocations_topic is not None
    records = await read_topic(settings, settings.revocations_topic)
    by_id = {json.loads(r.value)["id"]: r for r in records}
    for key_id, (reason, revoked_by) in revoked.items():
        record = by_id[f"revoked:{key_id}"]
        body = json.loads(record.value)
        account, user = owner[key_id]
        assert record.key == f"{account}/{user}".encode()
        assert (body["data"]["account_id"], body["data"]["iam_id"]) == (account, user)
        assert dict(record.headers)["content-type"] == b"application/cloudevents+json"
        assert (body["type"], body["source"], body["subject"]) == (
            "api_key.revoked",
            "/cleanup-worker",
            str(key_id),
        )
        assert body["data"]["reason"] == reason == "member_removed"
        assert body["data"]["revoked_by"] == revoked_by
        assert body["data"]["key_id"] == str(key_id)
        assert "sha256" not in record.value.decode()


@over_key_tables
async def test_backfill_revocations_are_announced(announcing: Settings, db: Any) -> None:
    """R5: the backfill writes the notices of its revocations; the running worker sends them."""
    settings = announcing
    await db.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, member_since, changed_at) "
        "VALUES ($1, $2, 'active', NULL, $3)",
        *member("acct", "stays"),
        at(0),
    )
    await seed_key(db, *member("acct", "stays"), at(0))
    orphans = [await seed_key(db, *member("acct", f"gone{i}"), at(0)) for i in range(5)]
    code, _, err = await cli(settings, "backfill", "--execute", "--max-fraction", "1", "--json")
    assert code == 0, err
    assert await outbox_notices(db) == len(orphans)
    async with running_worker(settings):
        await eventually(lambda: announced_all(db, settings))
    assert set(await revoked_keys(db)) == set(orphans)


async def test_rolled_back_revocation_announces_nothing(
    notices_settings: Settings, db: Any
) -> None:
    """A dry-run replay revokes in a transaction it rolls back: no outbox row, no notice."""
    settings = notices_settings
    await seed_story(db)
    async with publisher(settings) as pub:
        await pub.events(removals())
    code, out, err = await cli(settings, "replay", "--from", "earliest", "--json")
    assert code == 0, err
    assert json.loads(out)["keys_revoked"] == 2 * len(USERS)
    assert await revoked_keys(db) == {}
    assert await outbox_notices(db) == 0


@over_key_tables
async def test_sigkill_before_publishing_loses_no_notice(
    notices_settings: Settings, db: Any
) -> None:
    """The revocations commit while the notices cannot be published (their topic does not
    exist yet); the worker is SIGKILLed; a new worker announces them all."""
    settings = notices_settings
    assert settings.revocations_topic is not None
    await seed_story(db)
    worker = await spawn_worker(settings)
    try:
        async with publisher(settings) as pub:
            await pub.events(removals())

        async def revoked_not_announced() -> bool:
            return len(await revoked_keys(db)) == 2 * len(USERS) and await outbox_notices(db) > 0

        await eventually(revoked_not_announced, timeout=60)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    await create_topic(settings, settings.revocations_topic)
    async with running_worker(settings):
        await eventually(lambda: announced_all(db, settings), timeout=60)


_SLOW_DELETE = """
CREATE FUNCTION slow_outbox_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(3); RETURN OLD; END $$;
CREATE TRIGGER slow_outbox_delete BEFORE DELETE ON revocation_outbox_batches
FOR EACH ROW EXECUTE FUNCTION slow_outbox_delete();
"""


async def test_sigkill_after_publishing_before_deleting_loses_no_notice(
    announcing: Settings, db: Any
) -> None:
    """The notices are on the topic but their rows not yet deleted when the worker is
    SIGKILLed: the rows stay, and the next worker announces them again (at least once)."""
    settings = announcing
    await db.execute(_SLOW_DELETE)
    await seed_story(db)
    worker = await spawn_worker(settings)
    try:
        async with publisher(settings) as pub:
            await pub.events(removals())

        async def published_not_deleted() -> bool:
            return bool(await notice_ids(settings)) and await outbox_notices(db) > 0

        await eventually(published_not_deleted, timeout=60, interval=0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    await db.execute("DROP TRIGGER slow_outbox_delete ON revocation_outbox_batches")
    async with running_worker(settings):
        await eventually(lambda: announced_all(db, settings), timeout=60)
    ids = await notice_ids(settings)
    assert len(ids) > len(set(ids)), "the interrupted batch was announced twice"


async def test_two_replicas_share_the_outbox_without_repeats(announcing: Settings, db: Any) -> None:
    """Two workers relay the same outbox: every key announced, none twice."""
    settings = announcing
    await seed_story(db)
    async with running_worker(settings), running_worker(settings), publisher(settings) as pub:
        for user in USERS:
            await pub.events([event("removed", "acct", user, at(10))])
            await asyncio.sleep(0.02)
        await eventually(lambda: announced_all(db, settings), timeout=60)
    ids = Counter(await notice_ids(settings))
    assert set(ids.values()) == {1}


@pytest.mark.timeout(240)
async def test_broker_outage_then_every_notice_arrives(
    announcing: Settings, services: Services, db: Any
) -> None:
    """Revocations committed while the broker is away for 20 s (a backfill needs no broker)
    are announced once it is back, without a restart of the worker."""
    settings = announcing
    await db.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, member_since, changed_at) "
        "VALUES ('acct', 'stays', 'active', NULL, $1)",
        at(0),
    )
    orphans = [await seed_key(db, "acct", f"gone{i}", at(0)) for i in range(8)]
    async with running_worker(settings):
        began = time.monotonic()
        await stop_dev_service("kafka")
        code, _, err = await cli(settings, "backfill", "--execute", "--max-fraction", "1", "--json")
        assert code == 0, err
        assert await outbox_notices(db) == len(orphans)
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - began)))
        await start_dev_services()
        await eventually(lambda: announced_all(db, settings), timeout=120)


@pytest.mark.timeout(240)
async def test_database_outage_then_every_notice_arrives(
    announcing: Settings, services: Services, database_url: str
) -> None:
    """Removals that arrive while PostgreSQL is away for 20 s are applied and announced once
    it is back, and those announced before stay announced once."""
    settings = announcing
    db = await asyncpg.connect(database_url)
    await seed_story(db)
    await db.close()
    first, second = removals()[: len(USERS) // 2], removals()[len(USERS) // 2 :]
    async with running_worker(settings), publisher(settings) as pub:
        await pub.events(first)
        db = await asyncpg.connect(database_url)
        try:
            await eventually(lambda: announced_all(db, settings))
        finally:
            await db.close()
        await stop_dev_service("postgres")
        await pub.events(second)
        await asyncio.sleep(OUTAGE_S)
        await start_dev_services()
        db = await asyncpg.connect(database_url)
        try:

            async def everything() -> bool:
                return len(await revoked_keys(db)) == 2 * len(USERS) and await announced_all(
                    db, settings
                )

            await eventually(everything, timeout=120)
        finally:
            await db.close()
