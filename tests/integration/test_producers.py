"""Real producers through the real broker into one running worker: applied as the contract says.

Every producer the contract names (docs/events.md) sends, in each mode it offers, one addition
and one earlier removal of a member of its own account; the Java client and aiokafka also do so
in transactions, committed and aborted. One worker consumes them all; then each case is held to
the same outcome: two ledger rows, the old key revoked by the removal, the newer key live, the
member active since the addition, nothing dead-lettered (an aborted case: nothing at all).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from cleanup_worker.settings import Settings
from testkit.database import seed_key
from testkit.kafka import committed_offsets, end_offsets, publisher, read_topic
from testkit.processes import running_worker
from testkit.transactions import transactional
from testkit.waiting import eventually
from tests.integration import producers
from tests.integration.producers import ADDED_AT, CASES, IAM_ID, REMOVED_AT, SOURCE, Case

OLD_KEY_AT = datetime(2026, 11, 20, tzinfo=UTC)  # before the removal: revoked by it
NEW_KEY_AT = datetime(2026, 11, 27, tzinfo=UTC)  # after the re-add: a key of the new membership


@dataclass(frozen=True)
class Outcome:
    """What the worker made of one case's events."""

    ledger: frozenset[tuple[Any, ...]]
    revoked: dict[str, tuple[str, str]]
    live: frozenset[str]
    membership: tuple[Any, ...] | None
    dead_letters: int


@dataclass(frozen=True)
class Run:
    """The worker run over every case: outcomes and the records as they were on the wire."""

    outcomes: dict[str, Outcome]
    records: dict[str, list[Any]]

    def __repr__(self) -> str:  # pytest prints the fixture's value with every failure
        return f"Run({len(self.outcomes)} cases)"


async def _produce(settings: Settings) -> None:
    bootstrap, topic = settings.require_kafka(), settings.kafka_topics[0]
    by_producer: dict[str, list[Case]] = defaultdict(list)
    for case in CASES:
        by_producer[case.producer].append(case)
    async with publisher(settings) as pub:
        for sdk in ("python-sdk1", "python-sdk2"):
            await producers.python_sdk(pub.producer, topic, sdk, by_producer[sdk])
    async with transactional(settings) as producer:
        cases = by_producer[producers.AIOKAFKA_TXN]
        await producers.python_sdk(producer, topic, "python-sdk2", cases)
    await producers.java_sdk(bootstrap, topic, by_producer["java-sdk"])
    await producers.kcat(bootstrap, topic, by_producer["kcat"])
    await producers.console_producer(bootstrap, topic, by_producer["console-producer"])


async def _outcome(db: Any, case: Case, keys: dict[str, str], dead_letters: int) -> Outcome:
    ledger = await db.fetch(
        "SELECT source, event_id, account_id, iam_id, change, event_time, event_type "
        "FROM membership_events WHERE account_id = $1",
        case.account_id,
    )
    rows = await db.fetch(
        "SELECT id::text, revocation_reason, revoked_by, revoked_at IS NOT NULL AS revoked "
        "FROM api_keys WHERE account_id = $1",
        case.account_id,
    )
    names = {key_id: name for name, key_id in keys.items()}
    membership = await db.fetchrow(
        "SELECT state, member_since, changed_at FROM account_memberships WHERE account_id = $1",
        case.account_id,
    )
    return Outcome(
        ledger=frozenset(tuple(row) for row in ledger),
        revoked={
            names[r["id"]]: (r["revocation_reason"], r["revoked_by"]) for r in rows if r["revoked"]
        },
        live=frozenset(names[r["id"]] for r in rows if not r["revoked"]),
        membership=tuple(membership) if membership else None,
        dead_letters=dead_letters,
    )


def _expected(case: Case) -> Outcome:
    if case.transaction == "aborted":  # read_committed: never seen
        return Outcome(frozenset(), {}, frozenset({"old", "new"}), None, 0)
    removed, added = datetime.fromisoformat(REMOVED_AT), datetime.fromisoformat(ADDED_AT)
    ledger = {
        (SOURCE, case.event_id(change), case.account_id, IAM_ID, change, time, type_)
        for change, time in (("removed", removed), ("added", added))
        for type_ in [f"account.member.{change}"]
    }
    return Outcome(
        ledger=frozenset(ledger),
        revoked={"old": ("member_removed", f"event:{SOURCE}#{case.event_id('removed')}")},
        live=frozenset({"new"}),
        membership=("active", added, added),
        dead_letters=0,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def run(module_settings: Settings) -> AsyncIterator[Run]:
    """Every case's events, produced by the real tools and consumed by one worker."""
    producers.ensure_tools()
    settings = module_settings
    db = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        keys = {}
        for case in CASES:
            keys[case.name] = {
                "old": str(await seed_key(db, case.account_id, IAM_ID, OLD_KEY_AT)),
                "new": str(await seed_key(db, case.account_id, IAM_ID, NEW_KEY_AT)),
            }
        async with running_worker(settings):
            await _produce(settings)
            ends = await end_offsets(settings)

            async def consumed() -> bool:  # to the end: past the transaction markers too
                committed = await committed_offsets(settings)
                return all(committed.get(p, 0) >= end for p, end in ends.items())

            await eventually(consumed, timeout=60)
        records = await read_topic(settings, settings.kafka_topics[0])
        dead = await read_topic(settings, settings.dlq_topic)
        by_key: dict[str, list[Any]] = defaultdict(list)
        for record in records:
            by_key[record.key.decode()].append(record)
        outcomes = {}
        for case in CASES:
            dead_letters = sum(1 for r in dead if r.key == case.key.encode())
            outcomes[case.name] = await _outcome(db, case, keys[case.name], dead_letters)
        yield Run(outcomes, {case.name: by_key[case.key] for case in CASES})
    finally:
        await db.close()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_record_looks_as_documented(run: Run, case: Case) -> None:
    """The producer wrote both events in the mode named, with the headers docs/events.md shows."""
    records = run.records[case.name]
    assert len(records) == 2
    for record in records:
        headers = dict(record.headers)
        assert set(headers) == case.headers
        content_type = headers.get("content-type")
        assert (content_type.decode() if content_type else None) == case.content_type


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_applied_as_the_contract_says(run: Run, case: Case) -> None:
    """Both events are in the ledger, only the old key is revoked, nothing is dead-lettered
    (an aborted transaction's events: nothing at all)."""
    assert run.outcomes[case.name] == _expected(case)
