"""Clock skew (docs/design.md): an event dated too far ahead is dead-lettered, not applied, listed
with its reason, and applied by a redrive once its time has come."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, membership_rows, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import end_offsets, publisher, read_topic
from testkit.metrics import sample
from testkit.processes import cli, running_worker
from testkit.waiting import eventually


async def _dead_letter_one(settings: Settings, removal: Any) -> None:
    async with running_worker(settings), publisher(settings) as pub:
        await pub.events([removal])

        async def dead_lettered() -> bool:
            return await end_offsets(settings, settings.dlq_topic) == {0: 1}

        await eventually(dead_lettered)


async def _dlq(settings: Settings, *args: str, **extra: str) -> dict[str, Any]:
    code, out, err = await cli(settings, "dlq", *args, "--json", **extra)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


async def test_removal_an_hour_ahead_is_dead_lettered_and_listed(
    settings: Settings, db: Any
) -> None:
    """A removal dated one hour ahead revokes nothing; its dead letter says why, with the
    event time and the allowed skew, and `dlq list` says it does not apply yet."""
    key = await seed_key(db, "acct", "alice", at(0))
    when = datetime.now(UTC) + timedelta(hours=1)
    removal = event("removed", "acct", "alice", when)
    counted = sample("cleanup_future_events_total", {"type": "account.member.removed"})
    await _dead_letter_one(settings, removal)
    assert await revoked_keys(db) == {}
    assert await ledger_size(db) == 0
    assert await membership_rows(db) == {}
    [letter] = await read_topic(settings, settings.dlq_topic)
    provenance = dlq.decode_provenance(dict(letter.headers))
    assert provenance[dlq.H_ERROR_CLASS] == "FutureDatedEvent"
    assert when.isoformat() in provenance[dlq.H_ERROR_MESSAGE]
    assert "allowed skew of 300s" in provenance[dlq.H_ERROR_MESSAGE]
    assert sample("cleanup_future_events_total", {"type": "account.member.removed"}) == (
        counted + 1
    )
    [listed] = (await _dlq(settings, "list"))["letters"]
    assert (listed["now"], listed["parses_now"], listed["applies_now"]) == ("future", True, False)
    assert "ahead of the worker's clock" in listed["error_now"]
    report = await _dlq(settings, "redrive", "--execute")
    assert (report["redriven"], report["left"]) == (0, 1)
    assert report["left_letters"][0]["reason"] == "future"
    assert key not in await revoked_keys(db)


async def test_redriven_once_its_time_has_come_it_applies(settings: Settings, db: Any) -> None:
    """With a skew of 1 s, a removal dated 3 s ahead is dead-lettered; once its time has come,
    `dlq list` says it applies and `dlq redrive --execute` revokes the key."""
    key = await seed_key(db, "acct", "bob", at(0))
    when = datetime.now(UTC) + timedelta(seconds=3)
    strict = settings.model_copy(update={"max_future_skew_s": 1.0})
    await _dead_letter_one(strict, event("removed", "acct", "bob", when))
    assert await revoked_keys(db) == {}
    await asyncio.sleep(max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.5)
    [listed] = (await _dlq(settings, "list", CLEANUP_MAX_FUTURE_SKEW_S="1"))["letters"]
    assert listed["applies_now"] is True
    report = await _dlq(settings, "redrive", "--execute", CLEANUP_MAX_FUTURE_SKEW_S="1")
    assert (report["redriven"], report["left"]) == (1, 0)
    assert (await revoked_keys(db))[key][0] == "member_removed"


async def test_replay_applies_the_same_rule(settings: Settings, db: Any) -> None:
    """A replay meets a future-dated removal: it counts it and applies nothing of it."""
    key = await seed_key(db, "acct", "carol", at(0))
    async with publisher(settings) as pub:
        await pub.events([event("removed", "acct", "carol", datetime.now(UTC) + timedelta(days=1))])
    code, out, err = await cli(
        settings, "replay", "--from", "earliest", "--to", "latest", "--execute", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["future_dated"], report["applied"]) == (1, 0)
    assert await revoked_keys(db) == {}
    assert key not in await revoked_keys(db)
