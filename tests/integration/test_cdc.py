"""The change-event input end to end: rows changed in a real PostgreSQL table, captured by
the real Debezium connector on a real Kafka Connect, consumed by the worker (docs/cdc.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from cleanup_worker.settings import Settings
from testkit.cdc import cdc_settings, source_table
from testkit.database import revoked_keys, seed_key
from testkit.kafka import create_topic, read_topic
from testkit.processes import cli, running_worker
from testkit.waiting import eventually

HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


async def ledger(db: Any) -> list[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT event_type, account_id, iam_id FROM membership_events ORDER BY event_time, event_id"
    )
    return [(r["event_type"], r["account_id"], r["iam_id"]) for r in rows]


async def state(db: Any, account: str, user: str) -> str | None:
    value: str | None = await db.fetchval(
        "SELECT state FROM account_memberships WHERE account_id = $1 AND iam_id = $2",
        account,
        user,
    )
    return value


@pytest.mark.parametrize("schemas", [False, True], ids=["schemaless", "with-schemas"])
async def test_rows_inserted_updated_deleted_and_reinserted(
    settings: Settings, db: Any, schemas: bool
) -> None:
    """An update to the removed state and a delete revoke the member's older keys; a role
    change changes nothing; a re-inserted member keeps the keys made since; other members
    keep theirs. Both forms of Connect's JSON converter."""
    alice_old = await seed_key(db, "acct", "alice", HOUR_AGO)
    bob_old = await seed_key(db, "acct", "bob", HOUR_AGO)
    carol = await seed_key(db, "acct", "carol", HOUR_AGO)
    async with source_table(settings, schemas=schemas) as table:
        worker = cdc_settings(settings, table.topic)
        async with running_worker(worker):
            await table.execute(
                "INSERT INTO {table} (account_id, iam_id) VALUES "
                "('acct', 'alice'), ('acct', 'bob'), ('acct', 'carol')"
            )
            await table.execute("UPDATE {table} SET role = 'owner' WHERE iam_id = 'carol'")
            await table.execute("UPDATE {table} SET state = 'removed' WHERE iam_id = 'alice'")
            await table.execute("DELETE FROM {table} WHERE iam_id = 'bob'")

            async def removed() -> bool:
                return set(await revoked_keys(db)) == {alice_old, bob_old}

            await eventually(removed, timeout=60)
            bob_new = await seed_key(db, "acct", "bob", datetime.now(UTC))
            await table.execute("INSERT INTO {table} (account_id, iam_id) VALUES ('acct', 'bob')")

            async def readded() -> bool:
                return await state(db, "acct", "bob") == "active"

            await eventually(readded, timeout=60)
        revoked = await revoked_keys(db)
        assert set(revoked) == {alice_old, bob_old}
        assert carol not in revoked
        assert bob_new not in revoked
        assert all(reason == "member_removed" for reason, _ in revoked.values())
        assert revoked[bob_old][1].startswith("event:debezium://")
        assert await state(db, "acct", "alice") == "removed"
        assert await state(db, "acct", "carol") == "active"
        # The role change (without REPLICA IDENTITY FULL an update carries no `before`, so
        # it re-states carol's membership) moved nothing: she is a member since her insert.
        since = await db.fetchval(
            "SELECT member_since FROM account_memberships WHERE iam_id = 'carol'"
        )
        first = await db.fetchval(
            "SELECT min(event_time) FROM membership_events WHERE iam_id = 'carol'"
        )
        assert since == first
        assert ("cdc.member.removed", "acct", "carol") not in await ledger(db)


async def test_initial_snapshot_revokes_older_keys_of_removed_members(
    settings: Settings, db: Any
) -> None:
    """A table that already holds removed members: the connector's snapshot reads them, and
    their keys created before the time column's value are revoked; later keys and active
    members' keys are not (R6 off here, so only R1 acts)."""
    removed_at = datetime.now(UTC) - timedelta(minutes=30)
    dave_old = await seed_key(db, "acct", "dave", removed_at - timedelta(minutes=5))
    dave_after = await seed_key(db, "acct", "dave", removed_at + timedelta(minutes=5))
    erin = await seed_key(db, "acct", "erin", HOUR_AGO)
    stamp = removed_at.replace(tzinfo=None).isoformat()
    rows = [
        "INSERT INTO {table} (account_id, iam_id) VALUES ('acct', 'erin')",
        "INSERT INTO {table} (account_id, iam_id, state, changed_at) "
        f"VALUES ('acct', 'dave', 'removed', '{stamp}')",
    ]
    async with source_table(settings, rows=rows) as table:
        worker = cdc_settings(settings, table.topic, cdc_time_column="changed_at", late_keys="off")
        async with running_worker(worker):

            async def snapshot_applied() -> bool:
                return len(await ledger(db)) == 2

            await eventually(snapshot_applied, timeout=60)
        # A replay of the change events applies nothing twice.
        code, out, err = await cli(
            worker, "replay", "--from", "earliest", "--topic", table.topic, "--execute", "--json"
        )
        assert code == 0, err
        replayed = json.loads(out)
        assert (replayed["applied"], replayed["duplicate"]) == (0, 2)
    assert set(await revoked_keys(db)) == {dave_old}
    assert dave_after != erin
    row = await db.fetchrow(
        "SELECT state, changed_at FROM account_memberships WHERE iam_id = 'dave'"
    )
    # The time column (a `timestamp`: Debezium's MicroTimestamp), to the microsecond.
    assert (row["state"], row["changed_at"]) == ("removed", removed_at)


async def test_delete_of_a_row_never_seen_is_dead_lettered(settings: Settings, db: Any) -> None:
    """A delete whose row the worker never saw cannot name a member without REPLICA IDENTITY
    FULL: `before` holds placeholders. Debezium's own delete (and tombstone), copied alone to
    the topic the worker reads, goes to the dead-letter topic with its provenance and a
    message naming the replica identity; nothing is revoked."""
    key = await seed_key(db, "acct", "frank", HOUR_AGO)
    seen = ["INSERT INTO {table} (account_id, iam_id) VALUES ('acct', 'frank')"]
    async with source_table(settings, rows=seen) as table:
        await table.execute("DELETE FROM {table} WHERE iam_id = 'frank'")
        records: list[Any] = []

        async def captured() -> bool:
            records[:] = await read_topic(settings, table.topic)
            return len(records) >= 3  # the snapshot read, the delete, its tombstone

        await eventually(captured, timeout=60)
    copy = await create_topic(settings, f"{table.topic}.deletes")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for record in records[1:]:
            await producer.send_and_wait(copy, value=record.value, key=record.key)
    finally:
        await producer.stop()
    async with running_worker(cdc_settings(settings, copy)):

        async def dead_lettered() -> bool:
            return len(await read_topic(settings, settings.dlq_topic)) == 1

        await eventually(dead_lettered, timeout=60)
    (letter,) = await read_topic(settings, settings.dlq_topic)
    headers = {name: value.decode() for name, value in letter.headers}
    assert headers["dlq.original.topic"] == copy
    assert "REPLICA IDENTITY FULL" in headers["dlq.error.message"]
    assert letter.value == records[1].value
    assert await revoked_keys(db) == {}

    # Once the row is known (its snapshot read, Debezium's own record, reaches the topic),
    # `dlq list` sees the letter apply and `dlq redrive` revokes the member's key.
    worker = cdc_settings(settings, copy)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(copy, value=records[0].value, key=records[0].key)
    finally:
        await producer.stop()
    async with running_worker(worker):

        async def remembered() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM cdc_rows"))

        await eventually(remembered, timeout=60)
    code, out, err = await cli(worker, "dlq", "list", "--json")
    assert code == 0, err
    (listed,) = json.loads(out)["letters"]
    assert listed["now"] == "event"
    code, out, err = await cli(worker, "dlq", "redrive", "--execute", "--json")
    assert code == 0, err
    assert json.loads(out)["redriven"] == 1
    assert set(await revoked_keys(db)) == {key}
