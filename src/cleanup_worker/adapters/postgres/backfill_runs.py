"""SQL for the backfill other than revoking: its lock, its run records, and the assessment.

The assessment is one read-only pass over the key table (a hash join with the membership
source) that writes the ids of the orphaned keys into a session TEMP table. The run then
walks that table by key id in batches, and each batch re-checks R5 as it revokes
(`keys.revoke_orphans`). So the run never revokes a key the assessment did not count, which
is what makes the safety valves a bound and not an estimate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.locks import BACKFILL_LOCK_KEY
from cleanup_worker.domain.rules import OrphanReason

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


# The run's connection waits at most this long for a lock (a migration's, say).
LOCK_TIMEOUT = "2s"
# A batch's wait behind another transaction's row locks is much shorter: the live worker
# revoking the same keys (R1) locks them in its own order, so the two can deadlock, and
# PostgreSQL would take `deadlock_timeout` (1 s) to see it while both wait. The batch gives
# up first, rolls back (releasing its own locks, which the worker may be waiting for) and is
# retried: the backfill yields, the worker's lag does not pay (docs/performance.md).
BATCH_LOCK_TIMEOUT = "100ms"
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


async def yield_to_others(conn: Connection) -> None:
    """In a batch's transaction, before its first write: wait at most BATCH_LOCK_TIMEOUT for
    a row lock."""
    await conn.execute(f"SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'")


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
