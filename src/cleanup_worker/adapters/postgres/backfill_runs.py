"""SQL for the backfill other than revoking: its lock, its run records, and the assessment.

The assessment is one read-only pass over the key table (a hash join with the membership
source) that writes the ids of the orphaned keys into a session TEMP table. The run then
walks that table by key id in batches, and each batch re-checks R5 as it revokes
(`keys.revoke_orphans`). So the run never revokes a key the assessment did not count, which
is what makes the safety valves a bound and not an estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import (
    MembershipSource,
    fill,
    key_texts,
    membership_join,
    orphan_reason_sql,
)
from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.locks import BACKFILL_LOCK_KEY
from cleanup_worker.domain.rules import Assessment, OrphanReason

# Only one backfill (dry run or not) runs at a time, per database: the session advisory lock
# whose key is in locks.py.


async def try_lock(conn: Connection) -> bool:
    """Takes the session-level backfill lock if it is free; it lasts as long as `conn`."""
    locked: bool = await conn.fetchval("SELECT pg_try_advisory_lock($1)", BACKFILL_LOCK_KEY)
    return locked


async def lock_holder(conn: Connection) -> int | None:
    """The backend pid holding the backfill lock, if any (for the refusal message)."""
    pid: int | None = await conn.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = $1 AND objid = $2 AND objsubid = 1 AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        BACKFILL_LOCK_KEY >> 32,
        BACKFILL_LOCK_KEY & 0xFFFFFFFF,
    )
    return pid


# A batch never waits long behind another transaction's row locks: it gives up, rolls back
# (releasing its own) and is retried.
LOCK_TIMEOUT = "2s"
# Session memory for the TEMP tables (candidates, memberships file) before they spill to disk.
TEMP_BUFFERS = "64MB"


async def configure_session(conn: Connection, statement_timeout_ms: int) -> None:
    """Settings for the backfill's one connection; call it before anything else on it."""
    settings = {
        "application_name": "cleanup-worker backfill",
        "statement_timeout": str(statement_timeout_ms),
        "lock_timeout": LOCK_TIMEOUT,
        "temp_buffers": TEMP_BUFFERS,  # only before the session's first TEMP table
        # Batches commit asynchronously: each checkpoint commits with its revocations, so a
        # server crash can only lose both together (and --resume redoes them); the run's
        # final record commits synchronously, which flushes every batch before it to disk.
        "synchronous_commit": "off",
    }
    for name, value in settings.items():
        await conn.execute("SELECT set_config($1, $2, false)", name, value)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A row of `backfill_runs`, as `--resume` needs it."""

    run_id: UUID
    mode: str
    status: str
    options: dict[str, Any]
    checkpoint_key_id: str | None  # the key's id as text
    batches: int
    keys_examined: int
    revoked: dict[OrphanReason, int]

    @property
    def keys_revoked(self) -> int:
        return sum(self.revoked.values())


_REVOKED_COLUMNS = {
    OrphanReason.NO_MEMBERSHIP: "revoked_no_membership",
    OrphanReason.MEMBERSHIP_REMOVED: "revoked_membership_removed",
    OrphanReason.CREATED_BEFORE_MEMBER_SINCE: "revoked_created_before_member_since",
}


async def mark_interrupted(conn: Connection) -> int:
    """Runs still marked `running` died without saying so; only call under the lock."""
    status: str = await conn.execute(
        "UPDATE backfill_runs SET status = 'interrupted', updated_at = now() "
        "WHERE status = 'running'"
    )
    return int(status.rsplit(maxsplit=1)[-1])


async def create_run(conn: Connection, run_id: UUID, mode: str, options: Mapping[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO backfill_runs (run_id, mode, status, options) VALUES ($1, $2, 'running', $3)",
        run_id,
        mode,
        json.dumps(options),
    )


async def latest_execute_run(conn: Connection) -> RunRecord | None:
    """The most recent run with `--execute`, whatever its status."""
    row = await conn.fetchrow(
        "SELECT * FROM backfill_runs WHERE mode = 'execute' ORDER BY started_at DESC LIMIT 1"
    )
    if row is None:
        return None
    return RunRecord(
        run_id=row["run_id"],
        mode=row["mode"],
        status=row["status"],
        options=json.loads(row["options"]),
        checkpoint_key_id=row["checkpoint_key_id"],
        batches=row["batches"],
        keys_examined=row["keys_examined"],
        revoked={reason: row[column] for reason, column in _REVOKED_COLUMNS.items()},
    )


async def restart_run(conn: Connection, run_id: UUID, options: Mapping[str, Any]) -> None:
    """`--resume`: the run is running again, possibly with new limits."""
    await conn.execute(
        "UPDATE backfill_runs SET status = 'running', options = $2, detail = NULL, "
        "finished_at = NULL, updated_at = now() WHERE run_id = $1",
        run_id,
        json.dumps(options),
    )


async def record_assessment(conn: Connection, run_id: UUID, scanned: int, planned: int) -> None:
    await conn.execute(
        "UPDATE backfill_runs SET keys_scanned = $2, keys_planned = $3, updated_at = now() "
        "WHERE run_id = $1",
        run_id,
        scanned,
        planned,
    )


_RECORD_BATCH = """
UPDATE backfill_runs
SET checkpoint_key_id = $2,
    batches = batches + 1,
    keys_examined = keys_examined + $3,
    revoked_no_membership = revoked_no_membership + $4,
    revoked_membership_removed = revoked_membership_removed + $5,
    revoked_created_before_member_since = revoked_created_before_member_since + $6,
    updated_at = now()
WHERE run_id = $1
"""


async def record_batch(
    conn: Connection,
    run_id: UUID,
    last_key_id: str,
    examined: int,
    revoked: Mapping[OrphanReason, int],
) -> None:
    """The checkpoint of a batch; call it in the transaction that revoked the batch's keys."""
    counts = [revoked.get(reason, 0) for reason in _REVOKED_COLUMNS]
    await conn.execute(_RECORD_BATCH, run_id, last_key_id, examined, *counts)


async def finish_run(
    conn: Connection, run_id: UUID, status: str, detail: str | None = None
) -> None:
    await conn.execute(
        "UPDATE backfill_runs SET status = $2, detail = $3, finished_at = now(), "
        "updated_at = now() WHERE run_id = $1",
        run_id,
        status,
        detail,
    )


_CANDIDATES = "pg_temp.backfill_candidates"
# Enough for the hash of a few million memberships without spilling to disk; one session.
ASSESSMENT_WORK_MEM = "64MB"
# $1: only keys after this id (a resumed run), or null; $2: only these accounts, or null.
# CREATE TABLE AS, then one index build: cheaper than an index kept up to date row by row.
# The candidates keep the key's id in its own type: the run walks them in the key order that
# `$1` continues.
_FIND_CANDIDATES = """
CREATE TEMP TABLE backfill_candidates AS
SELECT id, account_id, reason
FROM (SELECT {id} AS id, {account_text} AS account_id, {reason} AS reason
      FROM {keys} AS k
      LEFT JOIN {memberships}
      WHERE {live}
        AND ($1::text IS NULL OR {id} > {after})
        AND ($2::text[] IS NULL OR {account} = ANY({accounts}))) AS keys
WHERE reason IS NOT NULL
"""
_TOTALS = """
SELECT count(*) AS keys, count(*) FILTER (WHERE {live}) AS unrevoked
FROM {keys} AS k
WHERE $1::text[] IS NULL OR {account} = ANY({accounts})
"""


@cache
def _statements(table: KeyTable, memberships: MembershipSource) -> tuple[str, str]:
    m = table.mapping
    parts = {
        **key_texts(table),
        "keys": table.name,
        "id": table.id(),
        "account": table.account(),
        "live": table.live("k"),
    }
    find = fill(
        _FIND_CANDIDATES,
        **parts,
        reason=orphan_reason_sql(table),
        memberships=membership_join(table, memberships.value),
        after=table.typed("$1::text", m.id_column),
        accounts=table.typed_array("$2", m.account_column),
    )
    totals = fill(_TOTALS, **parts, accounts=table.typed_array("$1", m.account_column))
    return find, totals


_HAS_ACTIVE_MEMBERS = "SELECT EXISTS (SELECT 1 FROM {memberships} WHERE state = 'active')"
_BY_REASON = f"SELECT reason, count(*) AS keys FROM {_CANDIDATES} GROUP BY reason"
_ACCOUNTS = f"SELECT count(DISTINCT account_id) FROM {_CANDIDATES}"
_TOP_ACCOUNTS = f"""
SELECT account_id, count(*) AS keys FROM {_CANDIDATES}
GROUP BY account_id ORDER BY keys DESC, account_id LIMIT $1
"""
_SAMPLE = f"SELECT id::text AS id FROM {_CANDIDATES} ORDER BY id LIMIT $1"


async def assess(
    conn: Connection,
    memberships: MembershipSource,
    *,
    accounts: Sequence[str] | None = None,
    after: str | None = None,
    top: int = 10,
) -> Assessment:
    """Finds the orphaned keys in scope (after `after`, in `accounts`) from one snapshot.

    It only reads shared tables (and takes no row locks); its one write is the session's TEMP
    table of candidates that `next_candidates` then walks.
    """
    table = key_table.current()
    scope = None
    if accounts:
        # An account the key table's column cannot hold has no keys there.
        fits = table.fits(table.mapping.account_column, accounts)
        scope = [account for account, ok in zip(accounts, fits, strict=True) if ok]
    find, totals_sql = _statements(table, memberships)
    await conn.execute(f"DROP TABLE IF EXISTS {_CANDIDATES}")
    async with conn.transaction(isolation="repeatable_read"):
        # One pass over every key, and an index over what it found: no statement timeout.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SELECT set_config('work_mem', $1, true)", ASSESSMENT_WORK_MEM)
        await conn.execute(find, after, scope)
        totals = await conn.fetchrow(totals_sql, scope)
        assert totals is not None  # an aggregate without GROUP BY returns one row
        active: bool = await conn.fetchval(
            _HAS_ACTIVE_MEMBERS.format(memberships=memberships.value)
        )
        await conn.execute(f"CREATE UNIQUE INDEX ON {_CANDIDATES} (id)")
        by_reason = {
            OrphanReason(row["reason"]): row["keys"] for row in await conn.fetch(_BY_REASON)
        }
        accounts_affected: int = await conn.fetchval(_ACCOUNTS)
        top_accounts = await conn.fetch(_TOP_ACCOUNTS, top)
        sample = await conn.fetch(_SAMPLE, top)
    return Assessment(
        keys_scanned=totals["keys"],
        keys_unrevoked=totals["unrevoked"],
        by_reason=by_reason,
        accounts_affected=accounts_affected,
        top_accounts=[(row["account_id"], row["keys"]) for row in top_accounts],
        sample_key_ids=[row["id"] for row in sample],
        has_active_members=active,
    )


_FIRST_CANDIDATES = """
SELECT coalesce(array_agg(id::text ORDER BY id), '{}'),
       coalesce(array_agg(reason ORDER BY id), '{}')
FROM (SELECT id, reason FROM pg_temp.backfill_candidates ORDER BY id LIMIT $1) AS batch
"""
# The temp table's id has the key table's id type: `$2` (text) is cast to it ({id_type}).
_NEXT_CANDIDATES = """
SELECT coalesce(array_agg(id::text ORDER BY id), '{}'),
       coalesce(array_agg(reason ORDER BY id), '{}')
FROM (SELECT id, reason FROM pg_temp.backfill_candidates WHERE id > {after} ORDER BY id LIMIT $1)
    AS batch
"""


async def next_candidates(
    conn: Connection, after: str | None, limit: int
) -> dict[str, OrphanReason]:
    """The next `limit` candidate keys after `after` (keyset order: the key's id in its own
    type), each with the R5 case the assessment found, in key order; ids as text."""
    if after is None:
        row = await conn.fetchrow(_FIRST_CANDIDATES, limit)
    else:
        table = key_table.current()
        after_sql = table.typed("$2::text", table.mapping.id_column)
        row = await conn.fetchrow(fill(_NEXT_CANDIDATES, after=after_sql), limit, after)
    assert row is not None  # an aggregate without GROUP BY returns one row
    return dict(zip(row[0], map(OrphanReason, row[1]), strict=True))
