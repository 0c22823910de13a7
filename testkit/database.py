"""The database for tests: seed keys, and read what the rules decided (one reader each)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cleanup_worker.domain.events import Member, MembershipEvent
from cleanup_worker.domain.rules import Membership, State
from testkit import key_rows
from testkit.events import T0
from testkit.waiting import eventually


async def seed_key(
    db: Any, account_id: str, iam_id: str, created_at: datetime, *, name: str = ""
) -> Any:
    """A key of the member in the active key table (testkit/key_tables.py); its id, in the
    table's own type (a uuid in our `api_keys`)."""
    if name:  # only our own table has a name column
        key_id = uuid.uuid4()
        await db.execute(
            "INSERT INTO api_keys (id, account_id, iam_id, name, key_hash, created_at) "
            "VALUES ($1, $2, $3, $4, 'sha256:test', $5)",
            key_id,
            account_id,
            iam_id,
            name,
            created_at,
        )
        return key_id
    return await key_rows.insert_key(db, account_id, iam_id, created_at)


async def revoked_keys(db: Any) -> dict[Any, tuple[str, str]]:
    """Each revoked key of the active key table: (reason, revoked_by)."""
    return await key_rows.revocations(db)


async def key_table(db: Any) -> list[tuple[Any, ...]]:
    """Every column of every key, in id order: to show that something changed none."""
    return await key_rows.all_columns(db)


async def ledger_size(db: Any) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM membership_events")
    return count


async def assert_no_offset_ahead_of_ledger(db: Any, committed: dict[int, int]) -> None:
    """Every record below a partition's committed offset is in the ledger (for streams whose
    every record is a distinct event): no offset was committed ahead of its transaction."""
    for partition, offset in committed.items():
        applied = await db.fetchval(
            "SELECT count(*) FROM membership_events WHERE kafka_partition = $1 "
            "AND kafka_offset < $2",
            partition,
            offset,
        )
        assert applied == offset, f"partition {partition}: {applied} of {offset} applied"


async def database_state(db: Any) -> tuple[list[tuple[Any, ...]], dict[Member, Membership]]:
    """Keys (id, revoked?, reason) and membership rows: what the rules decide."""
    states, revoked = await key_rows.key_states(db), await key_rows.revocations(db)
    keys = [
        (key_id, state == "revoked", revoked[key_id][0] if key_id in revoked else None)
        for key_id, state in sorted(states.items())
    ]
    return keys, await membership_rows(db)


async def membership_rows(db: Any) -> dict[Member, Membership]:
    """`account_memberships` as the rules' Membership values, by (account_id, iam_id)."""
    return {
        (r["account_id"], r["iam_id"]): Membership(
            State(r["state"]), r["member_since"], r["changed_at"]
        )
        for r in await db.fetch(
            "SELECT account_id, iam_id, state, member_since, changed_at FROM account_memberships"
        )
    }


async def rewrite_revocations(db: Any, statement: str, *args: Any) -> None:
    """Runs an UPDATE that un-revokes or rewrites revocations, as a restore or a reset does.

    R4's trigger (migration 0007) refuses such an UPDATE from anyone; the test owns its
    database and takes the documented way around it, in one transaction.
    """
    async with db.transaction():
        await db.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_revocation_is_permanent")
        await db.execute(statement, *args)
        await db.execute(
            "ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_revocation_is_permanent"
        )


async def seed_keys_for(db: Any, events: Sequence[MembershipEvent]) -> None:
    """One key, created long before them, for the member of each event."""
    await key_rows.insert_keys(db, [(e.account_id, e.iam_id, T0) for e in events])


async def lock_waiters(db: Any, table: str) -> set[int]:
    """The backends of this database waiting for a lock in a statement that names `table`."""
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() "
        "AND strpos(query, $1) > 0",
        table,
    )
    return {row["pid"] for row in rows}


async def until_lock_waiters(db: Any, table: str, *, timeout: float = 60.0) -> set[int]:
    """Waits until some backend is blocked on a lock naming `table`; returns them."""
    waiters: set[int] = set()

    async def blocked() -> bool:
        waiters.update(await lock_waiters(db, table))
        return bool(waiters)

    await eventually(blocked, timeout=timeout)
    return waiters


async def outbox_notices(db: Any) -> int:
    """How many notices wait in the outbox: the elements of its rows (one row per revoking
    statement, migration 0014)."""
    count: int = await db.fetchval(
        "SELECT coalesce(sum(cardinality(key_ids)), 0) FROM revocation_outbox_batches"
    )
    return count
