"""A key service that fills the created column from its own clock, 2 s behind or ahead of the
database's, writing keys while their owners are removed ("Key table mapping" and "R1
re-check", docs/design.md; docs/key-table.md, "Another service's clock").

R1 covers a key of (a, u) when its created column, as the key service wrote it, is at or
before the time T of the member's removal: the rule reads the column, and nothing else
tells the worker when a key was made. So a key written 1 s after the removal by a clock 2 s
behind is covered (it must be revoked, by the re-check, though it appeared after R1's
statement ran); one written 1 s before the removal by a clock 2 s ahead is not: it stays live
with R6 off, and with R6 on it is a late key of a removed member, revoked as orphaned.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from cleanup_worker.domain.events import MembershipEvent
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys
from testkit.events import event
from testkit.kafka import publisher
from testkit.key_rows import insert_key
from testkit.key_tables import member
from testkit.metrics import sample
from testkit.processes import running_worker
from testkit.waiting import eventually, until_database_clock, until_grown

MEMBERS = 6
WRITERS = 3
Member = tuple[str, str]


async def key_service(
    database_url: str, skew: timedelta, rng: random.Random, stop: asyncio.Event
) -> list[tuple[Any, Member, datetime]]:
    """Writes keys of random members until `stop`, each in a transaction held open a little,
    its created column from a clock `skew` off the database's; returns (id, member, created)
    of each key committed."""
    members = [member("acct", f"u{i}") for i in range(MEMBERS)]
    written = []
    conn = await asyncpg.connect(database_url)
    try:
        while not stop.is_set():
            owner = rng.choice(members)
            async with conn.transaction():
                created = await conn.fetchval("SELECT clock_timestamp() + $1::interval", skew)
                key_id = await insert_key(conn, *owner, created)
                # Open across the removal now and then: the key appears after R1 ran.
                await asyncio.sleep(rng.uniform(0, 0.4))
            written.append((key_id, owner, created))
    finally:
        await conn.close()
    return written


def sweeps() -> float:
    return sample("cleanup_late_key_sweep_duration_seconds_count")


Written = list[tuple[Any, Member, datetime]]


async def skewed_history(
    settings: Settings, db: Any, database_url: str, skew_s: float
) -> tuple[Written, dict[Member, MembershipEvent], datetime]:
    """Removes every member, one at a time, while key services with a clock `skew_s` off
    write keys; the keys written, the removals, and when the writers stopped."""
    seed = random.SystemRandom().randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    skew = timedelta(seconds=skew_s)
    stop = asyncio.Event()
    removals: dict[Member, MembershipEvent] = {}
    async with publisher(settings) as pub:
        writers = [
            asyncio.create_task(key_service(database_url, skew, random.Random(rng.random()), stop))
            for _ in range(WRITERS)
        ]
        for i in rng.sample(range(MEMBERS), MEMBERS):
            owner = member("acct", f"u{i}")
            removal = event("removed", *owner, await db.fetchval("SELECT clock_timestamp()"))
            await pub.events([removal])
            removals[owner] = removal
            await until_grown(sweeps, 1, timeout=30)  # keys keep coming between removals

        async def applied() -> bool:
            return await ledger_size(db) == MEMBERS

        await eventually(applied)
        last = max(removal.time for removal in removals.values())
        # The writers go on until their own clock is past every removal by 2 s more.
        await until_database_clock(db, last + timedelta(seconds=2 * abs(skew_s) + 1))
        stop.set()
        written = [key for keys in await asyncio.gather(*writers) for key in keys]
    # The skew decides some keys: written after their removal by the database's clock yet
    # covered (behind), or written before it and not covered (ahead).
    decided_by_skew = [
        key
        for key, owner, created in written
        if (created - skew > removals[owner].time) == (created <= removals[owner].time)
    ]
    assert decided_by_skew, "no key was written within the skew of its removal"
    return written, removals, await db.fetchval("SELECT clock_timestamp()")


async def until_swept_past(db: Any, settings: Settings, done: datetime) -> None:
    """Waits until the sweep has looked at every key written before `done` for the last time
    (its margin and the skew tolerance past it, and two sweeps more)."""
    await until_database_clock(db, done + timedelta(seconds=settings.keys_clock_skew_s + 3))
    await until_grown(sweeps, 2, timeout=30)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("key_shape", "skew_s"), [("billing", -2.0), ("billing", 2.0)], indirect=["key_shape"]
)
async def test_a_skewed_key_service_gets_exactly_the_keys_r1_covers_revoked(
    settings: Settings, db: Any, database_url: str, skew_s: float
) -> None:
    """Keys written during removals by a key service whose clock is 2 s off, R6 off: every
    key whose created column is at or before its owner's removal is revoked (member_removed,
    naming the removal), and no other key is."""
    settings = settings.model_copy(update={"late_keys": "off"})
    async with running_worker(settings):
        written, removals, done = await skewed_history(settings, db, database_url, skew_s)
        covered = {key for key, owner, created in written if created <= removals[owner].time}

        async def covered_revoked() -> bool:
            return covered <= set(await revoked_keys(db))

        await eventually(covered_revoked, timeout=10)
        await until_swept_past(db, settings, done)
    owners = {key: owner for key, owner, _ in written}
    assert await revoked_keys(db) == {
        key: ("member_removed", removals[owners[key]].ref) for key in covered
    }


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("key_shape", "skew_s"), [("keyring", -2.0), ("keyring", 2.0)], indirect=["key_shape"]
)
async def test_with_r6_no_key_of_a_skewed_key_service_outlives_its_removed_owner(
    settings: Settings, db: Any, database_url: str, skew_s: float
) -> None:
    """The same with R6 on (settle 1 s), every member staying removed: each key is revoked,
    member_removed when its created column is at or before the removal (R1, its re-check),
    orphaned when after (R6), both naming the removal."""
    settings = settings.model_copy(update={"late_key_settle_s": 1.0})
    async with running_worker(settings):
        written, removals, done = await skewed_history(settings, db, database_url, skew_s)

        async def all_revoked() -> bool:
            return len(await revoked_keys(db)) == len(written)

        await eventually(all_revoked, timeout=20)
        await until_swept_past(db, settings, done)
    assert await revoked_keys(db) == {
        key: (
            "member_removed" if created <= removals[owner].time else "orphaned",
            removals[owner].ref,
        )
        for key, owner, created in written
    }
