"""The standard path: reset the live group with Kafka's own kafka-consumer-groups tool."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup_worker.settings import Settings
from testkit.database import database_state, ledger_size, seed_key
from testkit.events import at, event
from testkit.kafka import committed_offsets, end_offsets, publisher
from testkit.metrics import sample_total
from testkit.processes import running_worker
from testkit.services import ROOT
from testkit.waiting import eventually


def events_counted(outcome: str) -> float:
    """cleanup_events_total for one outcome, summed over event types (this process)."""
    return sample_total("cleanup_events_total", outcome=outcome)


async def reset_group_to(settings: Settings, when: datetime) -> str:
    """`kafka-consumer-groups --reset-offsets --to-datetime WHEN --execute`, as an operator
    runs it (retried while the broker still counts the stopped worker as a member)."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    args = [
        str(ROOT / "scripts" / "kafka"),
        "consumer-groups",
        "--bootstrap-server",
        settings.require_kafka(),
        "--group",
        settings.kafka_group_id,
        "--reset-offsets",
        "--to-datetime",
        stamp,
        "--topic",
        settings.kafka_topics[0],
        "--execute",
    ]
    async with asyncio.timeout(60):
        while True:
            tool = await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out = (await tool.communicate())[0].decode()
            if tool.returncode == 0 and "Error" not in out:
                return out
            assert "inactive" in out, out  # any other failure is the test's
            await asyncio.sleep(1)


async def test_resetting_the_stopped_group_to_a_datetime_changes_nothing(
    settings: Settings, db: Any
) -> None:
    """Stop, reset to before every record, restart: all re-read as duplicates, same state."""
    since = datetime.now(UTC) - timedelta(minutes=1)
    for name in ("alice", "bob", "carol"):
        await seed_key(db, "acct", name, at(0))
    await seed_key(db, "acct", "alice", at(25))  # after her re-add: must stay alive
    story = [
        event("removed", "acct", "alice", at(10)),
        event("added", "acct", "alice", at(20)),
        event("removed", "acct", "bob", at(10)),
        event("added", "acct", "carol", at(-5)),
        event("removed", "acct", "carol", at(30)),
    ]
    async with publisher(settings) as pub:
        for i, e in enumerate(story):
            await pub.events([e], partition=i % 3)
    ends = await end_offsets(settings)

    async def caught_up() -> bool:
        return await committed_offsets(settings) == ends and await ledger_size(db) == len(story)

    async with running_worker(settings):
        await eventually(caught_up)
    before = await database_state(db)
    out = await reset_group_to(settings, since)
    assert settings.kafka_topics[0] in out
    assert await committed_offsets(settings) == dict.fromkeys(ends, 0)
    duplicates, dead_lettered = events_counted("duplicate"), events_counted("dead_lettered")
    async with running_worker(settings):
        await eventually(caught_up)
    assert await database_state(db) == before
    assert events_counted("duplicate") - duplicates == len(story)
    assert events_counted("dead_lettered") == dead_lettered
    assert await end_offsets(settings, settings.dlq_topic) == {0: 0}
