"""The backfill against a real PostgreSQL: each R5 case, the keys that must survive, and the SQL
compared with `domain.rules.orphan_reason`, which is the spec."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from cleanup_worker.adapters.postgres import backfill_assessment, keys
from cleanup_worker.adapters.postgres.keys import MembershipSource
from cleanup_worker.domain.rules import Membership, OrphanReason, State, orphan_reason
from cleanup_worker.errors import BackfillError
from testkit.database import key_table, revoked_keys, seed_key
from testkit.events import at
from testkit.processes import run_backfill


async def member(
    db: Any, account_id: str, iam_id: str, state: str = "active", since: datetime | None = None
) -> None:
    await db.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, member_since, changed_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        account_id,
        iam_id,
        state,
        since,
        at(0),
    )


async def test_key_without_membership_row_is_revoked(database_url: str, db: Any) -> None:
    """A key whose (account, user) has no membership row is revoked as orphaned."""
    await member(db, "acct", "bob")
    orphan = await seed_key(db, "acct", "alice", at(0))
    summary = await run_backfill(database_url)
    assert (await revoked_keys(db))[orphan] == ("orphaned", f"backfill:{summary.run_id}")
    assert summary.revoked == {OrphanReason.NO_MEMBERSHIP: 1}


async def test_key_of_removed_membership_is_revoked(database_url: str, db: Any) -> None:
    """A key whose membership row is `removed` is revoked as orphaned."""
    await member(db, "acct", "bob")
    await member(db, "acct", "alice", "removed")
    orphan = await seed_key(db, "acct", "alice", at(5))
    summary = await run_backfill(database_url)
    assert (await revoked_keys(db))[orphan] == ("orphaned", f"backfill:{summary.run_id}")
    assert summary.revoked == {OrphanReason.MEMBERSHIP_REMOVED: 1}


async def test_key_created_before_member_since_is_revoked(database_url: str, db: Any) -> None:
    """A key from an earlier membership (created before member_since) is revoked as orphaned."""
    await member(db, "acct", "alice", since=at(10))
    orphan = await seed_key(db, "acct", "alice", at(9))
    summary = await run_backfill(database_url)
    assert (await revoked_keys(db))[orphan] == ("orphaned", f"backfill:{summary.run_id}")
    assert summary.revoked == {OrphanReason.CREATED_BEFORE_MEMBER_SINCE: 1}


@pytest.mark.parametrize(
    ("since", "created"),
    [(None, at(0)), (at(10), at(11)), (at(10), at(10))],
    ids=["member-since-always", "created-after-member-since", "created-at-member-since"],
)
async def test_key_the_membership_keeps_survives(
    database_url: str, db: Any, since: datetime | None, created: datetime
) -> None:
    """An active member's key created at or after member_since (or with none) is not revoked."""
    await member(db, "acct", "alice", since=since)
    await seed_key(db, "acct", "alice", created)
    summary = await run_backfill(database_url)
    assert await revoked_keys(db) == {}
    assert summary.keys_revoked == 0


async def test_revoked_key_keeps_its_original_reason(database_url: str, db: Any) -> None:
    """An already revoked key keeps its reason, revoker and time (R4)."""
    await member(db, "acct", "bob")
    key = await seed_key(db, "acct", "alice", at(0))
    await db.execute(
        "UPDATE api_keys SET revoked_at = $2, revocation_reason = 'member_removed', "
        "revoked_by = 'event:/accounts#1' WHERE id = $1",
        key,
        at(30),
    )
    before = await key_table(db)
    summary = await run_backfill(database_url)
    assert await key_table(db) == before
    assert summary.assessment is not None
    assert summary.assessment.candidates == 0


async def test_dry_run_changes_no_key(database_url: str, db: Any) -> None:
    """A dry run reports what it would revoke and leaves every key as it was."""
    await member(db, "acct", "bob")
    await member(db, "acct", "carol", "removed")
    for minute in range(5):
        await seed_key(db, "acct", "alice", at(minute))
        await seed_key(db, "acct", "carol", at(minute))
    before = await key_table(db)
    summary = await run_backfill(database_url, execute=False)
    assert await key_table(db) == before
    assert summary.assessment is not None
    assert summary.assessment.by_reason == {
        OrphanReason.NO_MEMBERSHIP: 5,
        OrphanReason.MEMBERSHIP_REMOVED: 5,
    }
    run = await db.fetchrow("SELECT mode, status, keys_planned FROM backfill_runs")
    assert tuple(run.values()) == ("dry_run", "completed", 10)


async def test_account_option_limits_the_scope(database_url: str, db: Any) -> None:
    """With --account only that account's orphaned keys are revoked."""
    await member(db, "kept", "bob")
    inside = await seed_key(db, "target", "alice", at(0))
    await seed_key(db, "other", "alice", at(0))
    await run_backfill(database_url, accounts=("target",))
    assert set(await revoked_keys(db)) == {inside}


async def test_second_run_finds_nothing_left(database_url: str, db: Any) -> None:
    """After an executed run, a dry run finds no orphaned key (the operator's verify step)."""
    await member(db, "acct", "bob")
    await seed_key(db, "acct", "alice", at(0))
    await run_backfill(database_url)
    again = await run_backfill(database_url, execute=False)
    assert again.assessment is not None
    assert again.assessment.candidates == 0


async def test_resume_without_an_interrupted_run_is_an_error(database_url: str, db: Any) -> None:
    """--resume with no interrupted --execute run says there is nothing to resume."""
    await member(db, "acct", "bob")
    await run_backfill(database_url)
    with pytest.raises(BackfillError, match="nothing to resume"):
        await run_backfill(database_url, resume=True)


async def candidates(db: Any, after: uuid.UUID | None = None) -> list[str]:
    """Assesses on `db` itself (the candidates live in its session) and lists them (ids as
    text, as our tables hold them)."""
    await backfill_assessment.assess(
        db, MembershipSource.TABLE, after=None if after is None else str(after)
    )
    return list(await backfill_assessment.next_candidates(db, None, 10_000))


async def test_membership_added_after_the_assessment_keeps_the_key(db: Any) -> None:
    """A membership that appears between the assessment and the write saves the key."""
    await member(db, "acct", "bob")
    key = await seed_key(db, "acct", "alice", at(5))
    found = await candidates(db)
    assert found == [str(key)]
    await member(db, "acct", "alice", since=at(0))
    revoked = await keys.revoke_orphans(
        db, found, "backfill:x", MembershipSource.TABLE, announce=False
    )
    assert revoked == []
    assert await revoked_keys(db) == {}


async def test_key_revoked_meanwhile_keeps_member_removed(db: Any) -> None:
    """A key the worker revokes between the assessment and the write keeps its reason."""
    await member(db, "acct", "alice", "removed")
    key = await seed_key(db, "acct", "alice", at(0))
    found = await candidates(db)
    await db.execute(
        "UPDATE api_keys SET revoked_at = now(), revocation_reason = 'member_removed', "
        "revoked_by = 'event:/accounts#9' WHERE id = $1",
        key,
    )
    assert (
        await keys.revoke_orphans(db, found, "backfill:x", MembershipSource.TABLE, announce=False)
        == []
    )
    assert (await revoked_keys(db))[key] == ("member_removed", "event:/accounts#9")


def random_world(rng: random.Random) -> tuple[dict[tuple[str, str], Membership | None], list[Any]]:
    """Members in every R5 situation and keys at times that often equal member_since."""
    grid = [at(minute) + timedelta(microseconds=rng.choice([0, 1])) for minute in range(12)]
    members: dict[tuple[str, str], Membership | None] = {}
    for account in ("a1", "a2", "a3"):
        for user in range(12):
            kind = rng.choice(["none", "removed", "always", "since"])
            membership = {
                "none": None,
                "removed": Membership(State.REMOVED, None, at(0)),
                "always": Membership(State.ACTIVE, None, at(0)),
                "since": Membership(State.ACTIVE, rng.choice(grid), at(0)),
            }[kind]
            members[(account, f"u{user}")] = membership
    key_rows = [
        (
            uuid.UUID(int=rng.getrandbits(128)),
            *rng.choice(list(members)),
            rng.choice(grid),
            rng.random() < 0.15,
        )
        for _ in range(400)
    ]
    return members, key_rows


@pytest.mark.parametrize("seed", [11, 23, 47])
async def test_sql_agrees_with_orphan_reason(database_url: str, db: Any, seed: int) -> None:
    """On random data the SQL finds and revokes exactly the keys `orphan_reason` names."""
    members, key_rows = random_world(random.Random(seed))
    for (account, user), membership in members.items():
        if membership is not None:
            await member(db, account, user, membership.state.value, membership.member_since)
    await db.executemany(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at, revoked_at, "
        "revocation_reason, revoked_by) VALUES ($1, $2, $3, 'h', $4, "
        "CASE WHEN $5 THEN now() END, CASE WHEN $5 THEN 'member_removed' END, "
        "CASE WHEN $5 THEN 'event:x' END)",
        key_rows,
    )
    expected = {
        key_id: reason
        for key_id, account, user, created, revoked in key_rows
        if (reason := orphan_reason(created, revoked, members[(account, user)])) is not None
    }
    await backfill_assessment.assess(db, MembershipSource.TABLE)
    found = await db.fetch("SELECT id, reason FROM pg_temp.backfill_candidates")
    assert {row["id"]: OrphanReason(row["reason"]) for row in found} == expected

    summary = await run_backfill(database_url, batch_size=7)
    revoked = await revoked_keys(db)
    assert {k for k, (_, by) in revoked.items() if by.startswith("backfill:")} == set(expected)
    counts = {reason: list(expected.values()).count(reason) for reason in set(expected.values())}
    assert summary.revoked == counts
