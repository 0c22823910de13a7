"""The live members: real-time membership changes, with keys created beside them by a key
service that knows nothing of the worker (its own connections, straight to PostgreSQL).

Each member is added, gets a key, and is removed while a second key's transaction is still
open (it started before the removal, so R1 covers the key, but R1's UPDATE cannot see it: the
R1 re-check must revoke it). Then either a stale session creates a key after the removal (R6
revokes it), or the member is added back and gets a key that must stay live. A stale key is
never followed by a re-add: whether R6 acts before a re-add that comes later is a race with
two right answers, and the oracle can only check one.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import stamina
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from cleanup_worker.domain.events import MembershipEvent
from testkit.events import binary, event, structured

# What a restart or a reset of PostgreSQL throws at a client.
DATABASE_TROUBLE = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
_INSERT_KEY = (
    "INSERT INTO api_keys (id, account_id, iam_id, name, key_hash) "
    "VALUES ($1, $2, $3, $4, 'sha256:chaos') ON CONFLICT (id) DO NOTHING"
)


@dataclass
class Traffic:
    """The producer side of the run: every record goes out whatever the broker is doing."""

    producer: AIOKafkaProducer
    topic: str
    partitions: int
    rng: random.Random
    sent: dict[str, float] = field(default_factory=dict)  # event id -> first publication
    live_events: list[MembershipEvent] = field(default_factory=list)

    async def send(
        self, value: bytes, headers: list[tuple[str, bytes]], e: MembershipEvent | None
    ) -> None:
        partition = self.rng.randrange(self.partitions)
        started = time.time()
        # A broker restart fails sends for a few seconds; resending is what a producer does
        # (a duplicate is one more redelivery for the worker).
        async for attempt in stamina.retry_context(on=KafkaError, attempts=None, timeout=300):
            with attempt:
                await self.producer.send_and_wait(
                    self.topic, value, headers=headers, partition=partition
                )
        if e is not None:
            self.sent.setdefault(e.id, started)

    async def change(self, change: str, account: str, iam: str) -> MembershipEvent:
        """A membership change happening now, published as it happens."""
        e = event(change, account, iam, datetime.now(UTC))
        self.live_events.append(e)
        await self.send(*(structured(e) if self.rng.random() < 0.5 else binary(e)), e)
        return e


@dataclass
class KeyService:
    """Creates keys the way the product's key service does: `created_at` is the inserting
    transaction's start."""

    database_url: str
    committed: dict[uuid.UUID, float] = field(default_factory=dict)  # key -> commit returned
    stale: set[uuid.UUID] = field(default_factory=set)
    concurrent: set[uuid.UUID] = field(default_factory=set)

    async def create(self, account: str, iam: str, name: str) -> uuid.UUID:
        key_id = uuid.uuid4()
        # Same id on every attempt: a commit whose answer was lost is not a second key.
        async for attempt in stamina.retry_context(on=DATABASE_TROUBLE, attempts=None, timeout=120):
            with attempt:
                conn = await asyncpg.connect(self.database_url, timeout=5)
                try:
                    await conn.execute(_INSERT_KEY, key_id, account, iam, name)
                finally:
                    await conn.close(timeout=5)
        self.committed[key_id] = time.time()
        return key_id

    async def create_during_removal(
        self, traffic: Traffic, account: str, iam: str, hold_s: float
    ) -> None:
        """A key whose transaction starts before the removal and commits after it was sent.
        Not retried: if the commit is lost, the key either exists (created before the
        removal) or not, and the oracle reads which."""
        key_id = uuid.uuid4()
        removal_sent = False
        try:
            conn = await asyncpg.connect(self.database_url, timeout=5)
            try:
                async with conn.transaction():
                    await conn.execute(_INSERT_KEY, key_id, account, iam, "during removal")
                    await traffic.change("removed", account, iam)
                    removal_sent = True
                    await asyncio.sleep(hold_s)
                self.committed[key_id] = time.time()
                self.concurrent.add(key_id)
            finally:
                conn.terminate()
        except DATABASE_TROUBLE:
            pass
        if not removal_sent:  # the database failed first: the member is removed all the same
            await traffic.change("removed", account, iam)


async def live_member(
    traffic: Traffic, keys: KeyService, rng: random.Random, iam: str, start_s: float
) -> None:
    """One member's story (see the module docstring), starting `start_s` from now."""
    account = "acct-live"

    async def pause() -> None:
        await asyncio.sleep(rng.uniform(0.2, 2.0))

    stale = rng.random() < 0.5
    hold_s = rng.uniform(0.0, 1.5)
    await asyncio.sleep(start_s)
    await traffic.change("added", account, iam)
    await pause()
    await keys.create(account, iam, "first")
    await pause()
    await keys.create_during_removal(traffic, account, iam, hold_s)
    await pause()
    if stale:
        keys.stale.add(await keys.create(account, iam, "stale session"))
    else:
        await traffic.change("added", account, iam)
        await keys.create(account, iam, "after the re-add")
