"""Transactional producers through the real broker (docs/events.md, "Transactions"):
committed records applied, aborted ones never, the commit marker at the end of a quiet
partition passed (committed offset at the end, lag 0, R6 not held back), and a transaction
left open holding R6 back, as it must (a re-add may be inside it)."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaProducer

from cleanup_worker.domain.events import MembershipEvent
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, event, structured
from testkit.kafka import all_committed, committed_offsets, end_offsets, publisher
from testkit.metrics import sample
from testkit.processes import cli, running_worker
from testkit.transactions import transactional
from testkit.waiting import eventually
from tests.integration.test_late_keys import SETTLE_S, create_key, late_settings, now, wait_revoked


async def send(producer: AIOKafkaProducer, topic: str, events: list[MembershipEvent]) -> None:
    for e in events:
        value, headers = structured(e)
        sent = await producer.send(
            topic, value, key=e.iam_id.encode(), headers=headers, partition=0
        )
        await sent  # in the log (inside the transaction, if one is open)


def lag(settings: Settings) -> float:
    labels = {"topic": settings.kafka_topics[0], "partition": "0"}
    return sample("cleanup_consumer_lag", labels)


async def test_committed_applied_aborted_never_and_the_markers_are_passed(
    settings: Settings, db: Any
) -> None:
    """A committed transaction of two removals, then an aborted one of a third, on a quiet
    partition: the two applied, the third never; the group's committed offset reaches the
    end (past both markers), the lag gauge reads 0, and a key created afterwards for a
    removed member is revoked by R6 within the settle delay + 2 s."""
    settings = late_settings(settings)
    topic = settings.kafka_topics[0]
    keys = {user: await seed_key(db, "acct", user, at(0)) for user in ("a", "b", "c")}
    removals = {user: event("removed", "acct", user, now()) for user in ("a", "b", "c")}
    async with transactional(settings) as producer:
        async with producer.transaction():
            await send(producer, topic, [removals["a"], removals["b"]])
        await producer.begin_transaction()
        await send(producer, topic, [removals["c"]])
        await producer.abort_transaction()
    ends = await end_offsets(settings)
    assert ends[0] == 5  # two records, a commit marker, one record, an abort marker
    async with running_worker(settings):

        async def consumed() -> bool:
            return await ledger_size(db) == 2 and await committed_offsets(settings) == {0: 5}

        await eventually(consumed)

        async def no_lag() -> bool:
            return lag(settings) == 0

        await eventually(no_lag)
        late = await create_key(db, "acct", "a")
        await wait_revoked(db, late, timeout=SETTLE_S + 2)
    assert await revoked_keys(db) == {
        keys["a"]: ("member_removed", removals["a"].ref),
        keys["b"]: ("member_removed", removals["b"].ref),
        late: ("orphaned", removals["a"].ref),
    }
    # A replay window whose last entries are markers ends there: both removals read again
    # (duplicates), the aborted one not at all; `dlq list` reads an empty topic to its end.
    code, out, err = await cli(settings, "replay", "--from", "earliest", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["duplicate"], report["applied"], report["malformed"]) == (2, 0, 0)
    code, out, err = await cli(settings, "dlq", "list", "--json")
    assert code == 0, err
    assert json.loads(out)["dead_letters"] == 0


async def test_an_open_transaction_holds_r6_until_it_ends(settings: Settings, db: Any) -> None:
    """A removal applied; a re-add of the same member produced inside a transaction that stays
    open; then a key. R6 reports that it waits (cleanup_late_keys_waiting) and leaves the key
    alone; once the transaction commits, the re-add is applied and the key stays live."""
    settings = late_settings(settings)
    topic = settings.kafka_topics[0]
    removal = event("removed", "acct", "a", now())
    async with publisher(settings) as pub, running_worker(settings):
        await pub.events([removal], partition=0)
        async with transactional(settings) as producer:
            await producer.begin_transaction()
            await send(producer, topic, [event("added", "acct", "a", now())])
            key = await create_key(db, "acct", "a")

            async def waits() -> bool:
                return sample("cleanup_late_keys_waiting") >= 1

            await eventually(waits, timeout=SETTLE_S + 10)
            assert await revoked_keys(db) == {}
            await producer.commit_transaction()

        async def applied() -> bool:
            return await ledger_size(db) == 2 and await all_committed(settings)

        await eventually(applied)

        async def settled() -> bool:
            return sample("cleanup_late_keys_waiting") == 0

        await eventually(settled, timeout=SETTLE_S + 10)
    assert key not in await revoked_keys(db)
