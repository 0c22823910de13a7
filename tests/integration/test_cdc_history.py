"""A random history of a membership table, captured by the real Debezium connector, with the
worker and Kafka Connect restarted mid-stream (Connect by SIGKILL, so it re-sends what it had
not confirmed): the worker ends with exactly the oracle's revocations and memberships."""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cleanup_worker.domain.events import Change, MembershipEvent
from cleanup_worker.domain.rules import State
from cleanup_worker.settings import Settings
from testkit.cdc import (
    SourceTable,
    cdc_settings,
    kill_connect,
    offsets_flushed,
    source_table,
    start_connect,
)
from testkit.database import membership_rows, revoked_keys, seed_key
from testkit.kafka import all_committed, read_topic
from testkit.processes import running_worker
from testkit.waiting import eventually
from tests.oracle import KeyFact, expected_state

USERS = ["u0", "u1", "u2", "u3"]
STEPS = 36


class History:
    """Applies random changes to the table, each in its own transaction, bracketing its
    commit time between two clock readings so the oracle can place it among the keys."""

    def __init__(self, table: SourceTable, db: Any, rng: random.Random) -> None:
        self.table, self.db, self.rng = table, db, rng
        self.present: dict[str, bool] = {}  # user -> row exists (value: removed?)
        self.events: list[MembershipEvent] = []
        self.keys: list[KeyFact] = []
        self.last = datetime.now(UTC) - timedelta(days=1)

    async def now(self) -> datetime:
        value: datetime = await self.table.source.fetchval("SELECT clock_timestamp()")
        return value

    async def step(self, n: int) -> None:
        user = self.rng.choice(USERS)
        before = await self.now()
        # A key created between the previous change's commit and this one's.
        owner = self.rng.choice(USERS)
        created = self.last + (before - self.last) / 2
        key = await seed_key(self.db, "acct", owner, created)
        self.keys.append(KeyFact(str(key), "acct", owner, created, revoked=False))
        change = await self._change(user)
        after = await self.now()
        self.last = after
        if change is not None:
            self.events.append(
                MembershipEvent("oracle", f"{n:04d}", "t", change, after, "acct", user)
            )

    async def _change(self, user: str) -> Change | None:
        exists, removed = user in self.present, self.present.get(user, False)
        choice = self.rng.random()
        if not exists:
            await self.table.execute(
                "INSERT INTO {table} (account_id, iam_id) VALUES ('acct', $1)", user
            )
            self.present[user] = False
            return Change.ADDED
        if choice < 0.3:
            await self.table.execute("DELETE FROM {table} WHERE iam_id = $1", user)
            del self.present[user]
            return Change.REMOVED
        if choice < 0.6:
            state = "active" if removed else "removed"
            await self.table.execute("UPDATE {table} SET state = $2 WHERE iam_id = $1", user, state)
            self.present[user] = not removed
            return Change.ADDED if removed else Change.REMOVED
        role = self.rng.choice(["owner", "member", "viewer"])
        await self.table.execute("UPDATE {table} SET role = $2 WHERE iam_id = $1", user, role)
        return Change.REMOVED if removed else Change.ADDED  # re-states the row as it is


@pytest.mark.timeout(300)
async def test_random_history_with_restarts_ends_as_the_oracle_says(
    settings: Settings, db: Any
) -> None:
    seed = int(os.environ.get("CDC_HISTORY_SEED", random.randrange(2**32)))
    print(f"CDC_HISTORY_SEED={seed}")
    rng = random.Random(seed)
    async with source_table(settings) as table:
        history = History(table, db, rng)
        worker = cdc_settings(settings, table.topic, late_keys="off")
        async with running_worker(worker):
            for n in range(STEPS // 3):
                await history.step(n)
            await offsets_flushed(table, time.time())
            for n in range(STEPS // 3, STEPS // 2):
                await history.step(n)
            # Connect sent these, then dies before it flushes their offsets: it sends them again.
            await delivered_all(settings, table.topic, len(history.events))
            kill_connect()
            for n in range(STEPS // 2, 2 * STEPS // 3):
                await history.step(n)
        # The worker restarts too, while Connect is down.
        async with running_worker(worker):
            await start_connect()
            await table.register_again()
            for n in range(2 * STEPS // 3, STEPS):
                await history.step(n)
            delivered: list[Any] = []
            changes = len(history.events)

            async def all_applied() -> bool:
                delivered[:] = [r for r in await read_topic(settings, table.topic) if r.value]
                positions = {_position(r) for r in delivered}
                consumed = await all_committed(
                    worker.model_copy(update={"kafka_topics": [table.topic]})
                )
                print("waiting", len(positions), changes, consumed)
                return len(positions) == changes and consumed

            await eventually(all_applied, timeout=120, interval=2)
    repeats = Counter(_position(r) for r in delivered)
    again = sum(repeats.values()) - len(repeats)
    print(f"changes={changes} records={len(delivered)} redelivered={again}")
    assert max(repeats.values()) > 1, "Connect's restart re-sent nothing: the test proves less"
    rows, revoked = expected_state({}, history.keys, history.events)
    got = await revoked_keys(db)
    assert {str(k) for k in got} == revoked, f"seed {seed}"
    actual = await membership_rows(db)
    assert {m: r.state for m, r in actual.items()} == {m: r.state for m, r in rows.items()}, seed
    assert all(r.state in (State.ACTIVE, State.REMOVED) for r in actual.values())


async def delivered_all(settings: Settings, topic: str, changes: int) -> None:
    async def delivered() -> bool:
        records = await read_topic(settings, topic)
        return len({_position(r) for r in records if r.value}) == changes

    await eventually(delivered, timeout=60, interval=0.2)


def _position(record: Any) -> tuple[int, str]:
    value = json.loads(record.value)
    return (value["source"]["lsn"], value["op"])
