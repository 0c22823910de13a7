"""`cleanup-worker replay` on the real broker and database: windows, dry runs, repairs."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from cleanup_worker.domain.events import MembershipEvent
from cleanup_worker.settings import Settings
from testkit.database import (
    database_state,
    ledger_size,
    revoked_keys,
    seed_key,
)
from testkit.events import at, event, structured
from testkit.kafka import committed_offsets, end_offsets, publisher
from testkit.key_rows import unrevoke_all
from testkit.key_tables import member, over_key_tables
from testkit.processes import cli, running_worker
from testkit.waiting import eventually

HOUR_MS = 3_600_000


async def replay_json(settings: Settings, *args: str) -> dict[str, Any]:
    code, out, err = await cli(settings, "replay", *args, "--json")
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


async def story(settings: Settings, db: Any) -> list[MembershipEvent]:
    """Six members with two keys each; three removed, three added; two records a partition."""
    events = []
    for i in range(6):
        for _ in range(2):
            await seed_key(db, *member("acct", f"u{i}"), at(0))
        change = "removed" if i < 3 else "added"
        events.append(event(change, *member("acct", f"u{i}"), at(10 if i < 3 else -10)))
    async with publisher(settings) as pub:
        for i, e in enumerate(events):
            await pub.events([e], partition=i % 3)
    return events


async def apply_with_worker(settings: Settings, db: Any, count: int) -> None:
    """Runs the live worker until the ledger holds `count` events and offsets are committed."""
    ends = await end_offsets(settings)
    async with running_worker(settings):

        async def caught_up() -> bool:
            return await ledger_size(db) == count and await committed_offsets(settings) == ends

        await eventually(caught_up)


async def lose_writes(db: Any) -> None:
    """What a restored backup does: revocations and rows gone."""
    await unrevoke_all(db)
    await db.execute("DELETE FROM account_memberships")


async def test_dry_run_changes_nothing(settings: Settings, db: Any) -> None:
    """A dry run reports what it would do and writes nothing to the database or the DLQ."""
    await story(settings, db)
    async with publisher(settings) as pub:
        await pub.raw(b"{not json", partition=0)
    before = await database_state(db)
    report = await replay_json(settings, "--from", "earliest")
    assert report["execute"] is False
    assert report["records"] == 7
    assert report["events"] == {
        "account.member.added": {"applied": 3},
        "account.member.removed": {"applied": 3},
    }
    assert (report["keys_revoked"], report["memberships_changed"]) == (6, 6)
    assert report["malformed"] == 1
    assert await database_state(db) == before
    assert await ledger_size(db) == 0
    assert await end_offsets(settings, settings.dlq_topic) == {0: 0}


@over_key_tables
async def test_execute_with_reprocess_restores_lost_revocations(
    settings: Settings, db: Any
) -> None:
    """--execute --reprocess re-applies ledger events and so restores lost revocations."""
    events = await story(settings, db)
    await apply_with_worker(settings, db, len(events))
    applied = await database_state(db)
    revoked = await revoked_keys(db)
    await lose_writes(db)
    report = await replay_json(settings, "--from", "earliest", "--execute", "--reprocess")
    assert (report["applied"], report["keys_revoked"]) == (6, 6)
    assert await database_state(db) == applied
    assert await revoked_keys(db) == revoked


async def test_execute_without_reprocess_counts_ledger_events_as_duplicates(
    settings: Settings, db: Any
) -> None:
    """Without --reprocess, events already in the ledger are duplicates and change nothing."""
    events = await story(settings, db)
    await apply_with_worker(settings, db, len(events))
    await lose_writes(db)
    lost = await database_state(db)
    report = await replay_json(settings, "--from", "earliest", "--execute")
    assert (report["applied"], report["duplicate"], report["keys_revoked"]) == (0, 6, 0)
    assert await database_state(db) == lost


async def test_execute_leaves_the_groups_committed_offsets_as_they_were(
    settings: Settings, db: Any
) -> None:
    """The replay reads outside the group: its committed offsets do not move."""
    events = await story(settings, db)
    await apply_with_worker(settings, db, len(events))
    before = await committed_offsets(settings)
    await replay_json(settings, "--from", "earliest", "--execute", "--reprocess")
    assert await committed_offsets(settings) == before


async def test_replay_beside_the_live_worker_keeps_its_group_and_the_state_right(
    settings: Settings, db: Any
) -> None:
    """A replay while the worker runs and consumes repairs the state; the group is undisturbed."""
    await story(settings, db)
    late = await seed_key(db, "acct", "late", at(0))
    ends = await end_offsets(settings)
    async with running_worker(settings), publisher(settings) as pub:

        async def caught_up() -> bool:
            return await committed_offsets(settings) == ends and await ledger_size(db) == 6

        await eventually(caught_up)
        applied = await database_state(db)
        await lose_writes(db)
        bound = ",".join(f"{p}:{offset}" for p, offset in ends.items())
        replaying = asyncio.create_task(
            replay_json(settings, "--from", "earliest", "--to", bound, "--execute", "--reprocess")
        )
        await pub.events([event("removed", "acct", "late", at(10))], partition=1)
        report = await replaying
        assert report["applied"] == 6
        ends = await end_offsets(settings)

        async def late_applied() -> bool:
            return await committed_offsets(settings) == ends and late in await revoked_keys(db)

        await eventually(late_applied)
        assert ends == {0: 2, 1: 3, 2: 2}
    keys, rows = await database_state(db)
    assert [k for k in keys if k[0] != late] == [k for k in applied[0] if k[0] != late]
    assert (late, True, "member_removed") in keys
    assert {m: r for m, r in rows.items() if m[1] != "late"} == applied[1]


async def test_malformed_records_are_counted_not_dead_lettered_again(
    settings: Settings, db: Any
) -> None:
    """An --execute replay reports malformed records and leaves the DLQ as it was."""
    async with publisher(settings) as pub:
        await pub.raw(b"{not json", partition=2)
        await pub.raw(None, partition=2)
    report = await replay_json(settings, "--from", "earliest", "--execute")
    assert report["malformed"] == 2
    assert await end_offsets(settings, settings.dlq_topic) == {0: 0}


async def publish_stamped(settings: Settings, stamps_ms: list[int]) -> None:
    """One removal per partition at each record timestamp (CreateTime), in that order."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for n, stamp in enumerate(stamps_ms):
            for partition in range(3):
                value, headers = structured(event("removed", "acct", f"p{partition}-{n}", at(1)))
                await producer.send_and_wait(
                    settings.kafka_topics[0],
                    value=value,
                    headers=headers,
                    partition=partition,
                    timestamp_ms=stamp,
                )
    finally:
        await producer.stop()


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _spans(report: dict[str, Any]) -> dict[int, tuple[int, int, int]]:
    return {p["partition"]: (p["start"], p["stop"], p["records"]) for p in report["partitions"]}


async def test_time_window_reads_the_records_stamped_inside_it(settings: Settings) -> None:
    """--from T1 --to T2 reads, in every partition, the records stamped in [T1, T2)."""
    base = (int(time.time()) // 60 - 300) * 60_000  # a whole minute, five hours ago
    await publish_stamped(settings, [base, base + HOUR_MS, base + 2 * HOUR_MS])
    report = await replay_json(
        settings, "--from", _iso(base + HOUR_MS // 2), "--to", _iso(base + 3 * HOUR_MS // 2)
    )
    assert _spans(report) == {0: (1, 2, 1), 1: (1, 2, 1), 2: (1, 2, 1)}
    assert report["applied"] == 3


async def test_offset_window_reads_exactly_those_offsets(settings: Settings) -> None:
    """--from 1:1 --to 1:3 reads offsets 1 and 2 of partition 1 and nothing else."""
    await publish_stamped(settings, [int(time.time() * 1000)] * 4)
    report = await replay_json(settings, "--from", "1:1", "--to", "1:3")
    assert _spans(report) == {1: (1, 3, 2)}
    assert report["records"] == 2


async def test_earliest_to_latest_reads_every_partition(settings: Settings) -> None:
    """earliest..latest (the default --to) reads everything in all partitions."""
    await publish_stamped(settings, [int(time.time() * 1000)] * 2)
    report = await replay_json(settings, "--from", "earliest", "--to", "latest")
    assert _spans(report) == {0: (0, 2, 2), 1: (0, 2, 2), 2: (0, 2, 2)}


async def test_from_latest_reads_nothing(settings: Settings) -> None:
    """A window that starts at the end is empty."""
    await publish_stamped(settings, [int(time.time() * 1000)])
    report = await replay_json(settings, "--from", "latest")
    assert report["records"] == 0
    assert _spans(report) == {0: (1, 1, 0), 1: (1, 1, 0), 2: (1, 1, 0)}


async def test_one_partition_reads_only_that_partition(settings: Settings) -> None:
    """--partition 2 reads partition 2 alone."""
    await publish_stamped(settings, [int(time.time() * 1000)] * 3)
    report = await replay_json(settings, "--from", "earliest", "--partition", "2")
    assert _spans(report) == {2: (0, 3, 3)}


async def test_a_bad_when_is_a_usage_error(settings: Settings) -> None:
    """An unreadable --from stops before touching anything, exit 2, naming the forms."""
    code, _, err = await cli(settings, "replay", "--from", "yesterday")
    assert code == 2
    assert "PARTITION:OFFSET" in err
