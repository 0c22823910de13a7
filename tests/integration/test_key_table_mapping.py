"""Revoking keys in an existing key table of another shape, through the mapping (docs/key-table.md):
a bigint id, a bigint account, in schema `keysvc`, camelCase quoted columns, a state-only marker
with an `expired` state that must be left alone, and no reason or revoked-by columns (our
key_revocations records them). One test per statement family."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio

from cleanup_worker.adapters.cloudevents import notices
from cleanup_worker.adapters.postgres import key_table, keys, late_keys, outbox, report
from cleanup_worker.adapters.postgres.key_table_owner import owner_sql
from cleanup_worker.bootstrap import explain
from cleanup_worker.errors import EXIT_CONFIG
from cleanup_worker.settings import Settings
from testkit.events import at, event
from testkit.kafka import create_topic, publisher, read_topic
from testkit.key_tables import KEYSVC_STATE_ONLY as MAPPING
from testkit.processes import cli, spawn_worker
from testkit.waiting import eventually

ENV = {
    "CLEANUP_KEYS_TABLE": "keysvc.ApiKeys",
    "CLEANUP_KEYS_ID_COLUMN": "keyId",
    "CLEANUP_KEYS_ACCOUNT_COLUMN": "tenantId",
    "CLEANUP_KEYS_USER_COLUMN": "userId",
    "CLEANUP_KEYS_CREATED_COLUMN": "createdAt",
    "CLEANUP_KEYS_REVOKED_AT_COLUMN": "",
    "CLEANUP_KEYS_STATE_COLUMN": "status",
    "CLEANUP_KEYS_LIVE_STATES": "active",
    "CLEANUP_KEYS_REVOKED_STATE": "revoked",
    "CLEANUP_KEYS_REASON_COLUMN": "",
    "CLEANUP_KEYS_REVOKED_BY_COLUMN": "",
}

CREATE = """
CREATE SCHEMA keysvc;
CREATE TABLE keysvc."ApiKeys" (
    "keyId"      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "tenantId"   bigint NOT NULL,
    "userId"     text NOT NULL,
    "createdAt"  timestamptz NOT NULL DEFAULT now(),
    status       text NOT NULL DEFAULT 'active',
    "secretHash" text NOT NULL DEFAULT 'sha256:test'
);
"""


@pytest_asyncio.fixture
async def mapped(db: Any) -> AsyncIterator[Any]:
    """The key service's table with what its owner applies, installed for this process."""
    await db.execute(CREATE)
    # One transaction here, so no CONCURRENTLY (the tables are new and empty).
    await db.execute(owner_sql(key_table.KeyTable(MAPPING)).replace("CONCURRENTLY ", ""))
    key_table.use(await key_table.load(db, MAPPING))
    try:
        yield db
    finally:
        key_table.use(key_table.DEFAULT)


async def add_key(
    db: Any, tenant: int, user: str, created: datetime, status: str = "active"
) -> int:
    key_id: int = await db.fetchval(
        'INSERT INTO keysvc."ApiKeys" ("tenantId", "userId", "createdAt", status) '
        'VALUES ($1, $2, $3, $4) RETURNING "keyId"',
        tenant,
        user,
        created,
        status,
    )
    return key_id


async def statuses(db: Any) -> dict[int, str]:
    rows = await db.fetch('SELECT "keyId", status FROM keysvc."ApiKeys"')
    return {row["keyId"]: row["status"] for row in rows}


async def audit(db: Any) -> dict[str, tuple[str, str]]:
    rows = await db.fetch("SELECT key_id, reason, revoked_by FROM key_revocations")
    return {row["key_id"]: (row["reason"], row["revoked_by"]) for row in rows}


async def ledger_removal(
    db: Any, account: str, user: str, when: datetime, event_id: str, source: str = "/s"
) -> str:
    await db.execute(
        "INSERT INTO membership_events (source, event_id, account_id, iam_id, change, "
        "event_time, event_type) VALUES ($5, $1, $2, $3, 'removed', $4, 'x')",
        event_id,
        account,
        user,
        when,
        source,
    )
    return f"event:{source}#{event_id}"


async def test_r1_revokes_in_the_mapped_table_and_announces_an_integer_id(mapped: Any) -> None:
    """R1 marks covered live keys `revoked`, leaves expired and later keys, records reason and
    revoked_by in key_revocations, notes the later key for R6, and announces key_id "<n>"."""
    db = mapped
    covered = await add_key(db, 1001, "alice", at(-10))
    later = await add_key(db, 1001, "alice", at(10))
    expired = await add_key(db, 1001, "alice", at(-10), "expired")
    other = await add_key(db, 1002, "alice", at(-10))
    removal = event("removed", "1001", "alice", at(0))
    unmappable = event("removed", "tenant-x", "alice", at(0))  # no bigint: no key there
    async with db.transaction():
        count = await keys.revoke_for_removals(
            db, [removal, unmappable], announce=True, note_late_keys=True
        )
    assert count == 1
    assert await statuses(db) == {
        covered: "revoked",
        later: "active",
        expired: "expired",
        other: "active",
    }
    assert await audit(db) == {str(covered): ("member_removed", removal.ref)}
    noted = await db.fetch("SELECT key_id FROM late_key_candidates")
    assert [row["key_id"] for row in noted] == [str(later)]
    async with db.transaction():
        [pending] = (await outbox.claim(db, 10, 10)).notices
    body = json.loads(notices.record(pending, event_type="api_key.revoked", source="/cw")[1])
    assert body["data"]["key_id"] == str(covered)
    assert (body["data"]["account_id"], body["data"]["reason"]) == ("1001", "member_removed")


async def test_recheck_revokes_a_key_that_appeared_after_the_removal(mapped: Any) -> None:
    """The R1 re-check revokes a live key created before an applied removal, as R1 would."""
    db = mapped
    ref = await ledger_removal(db, "1001", "alice", at(10), "r1")
    key = await add_key(db, 1001, "alice", at(5))
    expired = await add_key(db, 1001, "alice", at(5), "expired")
    async with db.transaction():
        revoked = await keys.recheck_recent_keys(db, at(0), announce=False)
    assert [(k.key_id, k.account_id, k.revoked_by) for k in revoked] == [(str(key), "1001", ref)]
    assert await statuses(db) == {key: "revoked", expired: "expired"}
    assert await audit(db) == {str(key): ("member_removed", ref)}


async def test_r6_revokes_a_late_key_of_a_removed_member(mapped: Any) -> None:
    """A key created after its owner's latest removal is noted, judged late, and revoked
    `orphaned`, naming the removal."""
    db = mapped
    ref = await ledger_removal(db, "1001", "alice", at(10), "r1")
    await db.execute(
        "INSERT INTO account_memberships VALUES ('1001', 'alice', 'removed', NULL, $1)", at(10)
    )
    key = await add_key(db, 1001, "alice", at(20))
    async with db.transaction():
        await late_keys.note_new_keys(db, at(0))
        late = await late_keys.review_candidates(db)
        assert [(k.key_id, k.created_at) for k in late] == [(str(key), at(20))]
        revoked = await keys.revoke_late_keys(db, [str(key)], announce=False)
    assert [k.key_id for k in revoked] == [str(key)]
    assert await statuses(db) == {key: "revoked"}
    assert await audit(db) == {str(key): ("orphaned", ref)}
    assert await db.fetchval("SELECT count(*) FROM late_key_candidates") == 0


async def test_backfill_execute_revokes_orphans_through_the_mapping(
    mapped: Any, settings: Settings
) -> None:
    """`backfill --execute`, as a process configured by CLEANUP_KEYS_*, revokes an orphaned
    key (R5) and leaves a member's key and an expired one."""
    db = mapped
    await db.execute(
        "INSERT INTO account_memberships VALUES ('1001', 'alice', 'active', $1, $1)", at(0)
    )
    kept = await add_key(db, 1001, "alice", at(5))
    orphaned = await add_key(db, 1001, "carol", at(5))
    expired = await add_key(db, 1001, "carol", at(5), "expired")
    code, out, err = await cli(
        settings, "backfill", "--execute", "--max-fraction", "1", "--json", **ENV
    )
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    assert await statuses(db) == {kept: "active", orphaned: "revoked", expired: "expired"}
    assert await audit(db) == {str(orphaned): ("orphaned", f"backfill:{run_id}")}


async def test_explain_reads_the_audit_of_a_mapped_key(mapped: Any, settings: Settings) -> None:
    """`explain --key <bigint>` finds the key, its R1 revocation from key_revocations, and an
    expired key as left alone."""
    db = mapped
    key = await add_key(db, 1001, "alice", at(-10))
    expired = await add_key(db, 1001, "alice", at(-10), "expired")
    removal = event("removed", "1001", "alice", at(0))
    await ledger_removal(db, "1001", "alice", at(0), removal.id, removal.source)
    async with db.transaction():
        await keys.revoke_for_removals(db, [removal], announce=False)
    mapped_settings = Settings(**{**settings.model_dump(), **_fields(ENV)})
    answer = await explain(mapped_settings, member=("1001", "alice"), key_id=None)
    fates = {fate.key_id: fate for fate in answer.keys}
    assert fates[str(key)].status == "revoked"
    assert fates[str(key)].revoked_at is not None
    assert fates[str(expired)].status == "other_state"
    by_key = await explain(mapped_settings, member=None, key_id=str(key))
    assert [fate.key_id for fate in by_key.keys] == [str(key)]


async def test_a_mapped_column_that_does_not_exist_stops_start_up(
    mapped: Any, settings: Settings
) -> None:
    """A missing column fails `explain` at start with exit 2 and one line naming the setting."""
    code, _, err = await cli(
        settings, "explain", "--key", "1", **{**ENV, "CLEANUP_KEYS_USER_COLUMN": "user_id"}
    )
    assert code == EXIT_CONFIG
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "CLEANUP_KEYS_USER_COLUMN" in lines[0]


def _fields(env: dict[str, str]) -> dict[str, Any]:
    """CLEANUP_KEYS_* values as Settings fields (empty: no such column)."""
    fields: dict[str, Any] = {}
    for name, value in env.items():
        field = name.removeprefix("CLEANUP_").lower()
        fields[field] = (value.split(",") if field == "keys_live_states" else value) or None
    return fields


async def test_the_worker_revokes_and_announces_through_the_mapping(
    mapped: Any, settings: Settings
) -> None:
    """`run` as a process configured by CLEANUP_KEYS_*: a removal from Kafka revokes the
    member's live key in the mapped table and its notice carries key_id "<bigint>"."""
    db = mapped
    topic = f"test-notices-{uuid.uuid4().hex[:12]}"
    announcing = settings.model_copy(update={"revocations_topic": topic})
    await create_topic(announcing, topic)
    key = await add_key(db, 1001, "alice", at(-10))
    expired = await add_key(db, 1001, "alice", at(-10), "expired")
    removal = event("removed", "1001", "alice", at(0))
    worker = await spawn_worker(announcing, **ENV)
    try:
        async with publisher(announcing) as pub:
            await pub.events([removal])

        async def announced() -> bool:
            return bool(await read_topic(announcing, topic))

        await eventually(announced, timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        await worker.wait()
    assert await statuses(db) == {key: "revoked", expired: "expired"}
    [record] = await read_topic(announcing, topic)
    data = json.loads(record.value)["data"]
    assert (data["key_id"], data["reason"], data["revoked_by"]) == (
        str(key),
        "member_removed",
        removal.ref,
    )


async def test_report_reads_the_revocations_of_a_mapped_table_from_the_audit(mapped: Any) -> None:
    """A removal applied with its R1 revocation counts as R1 in the period, with the key's
    exposure, read from key_revocations and the mapped table's created column."""
    db = mapped
    key = await add_key(db, 1001, "alice", at(-10))
    removal = event("removed", "1001", "alice", at(0))
    async with db.transaction():
        await ledger_removal(db, "1001", "alice", at(0), removal.id, removal.source)
        await keys.revoke_for_removals(db, [removal], announce=False)
    now = datetime.now(UTC)
    figures = await report.revocation_figures(db, now - timedelta(hours=1), now, 60.0, 5)
    [period] = [row for row in figures["stats"] if row["all_days"] and row["all_rules"]]
    assert period["keys"] == 1
    [slow] = figures["slowest"]
    assert (slow["id"], slow["rule"], slow["account_id"]) == (str(key), "R1", "1001")


async def test_a_candidate_left_by_an_earlier_mapping_is_dropped_not_cast(mapped: Any) -> None:
    """A uuid noted while the keys lived in our api_keys matches no bigint key: R6's review
    drops it instead of failing on the cast."""
    await mapped.execute(
        "INSERT INTO late_key_candidates (key_id, account_id, iam_id, created_at) "
        "VALUES ('7d0c5f3e-3a0b-4c3e-9f4e-2b1d8f6a9c10', '1001', 'alice', $1)",
        at(0),
    )
    async with mapped.transaction():
        assert await late_keys.review_candidates(mapped) == []
    assert await mapped.fetchval("SELECT count(*) FROM late_key_candidates") == 0
