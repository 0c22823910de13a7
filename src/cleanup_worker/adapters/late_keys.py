"""SQL of the late-key sweep: its shared cursor, the R1 re-check and R6 (DESIGN §2).

The decisions mirror domain/late_keys.py (recheck_removal, late_key_removal), which is the
spec; the tests hold the two together. Migration 0008 explains the cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from cleanup_worker.adapters.keys import REASON_MEMBER_REMOVED, REASON_ORPHANED
from cleanup_worker.adapters.postgres import Connection


@dataclass(frozen=True, slots=True)
class Cursor:
    """The row of `late_key_sweep` (see migration 0008)."""

    window_start: datetime
    horizon: datetime
    probe_at: datetime | None
    probe_horizon: datetime | None
    probe_vxids: tuple[str, ...] | None
    swept_at: datetime | None
    r6_blocked_since: datetime | None
    r6_waiting: int


@dataclass(frozen=True, slots=True)
class Revoked:
    """A key the sweep revoked: enough to log it, never its hash."""

    key_id: UUID
    account_id: str
    iam_id: str
    revoked_by: str


@dataclass(frozen=True, slots=True)
class LateKey:
    """An R6 candidate that is still late: live, created after the latest removal."""

    key_id: UUID
    created_at: datetime


_LOCK_CURSOR = """
SELECT window_start, horizon, probe_at, probe_horizon, probe_vxids, swept_at,
       r6_blocked_since, r6_waiting, clock_timestamp() AS now
FROM late_key_sweep
FOR UPDATE SKIP LOCKED
"""


async def lock_cursor(conn: Connection) -> tuple[Cursor, datetime] | None:
    """The cursor, locked until the transaction ends, and the database's clock; None when
    another replica holds it (it is sweeping now)."""
    row = await conn.fetchrow(_LOCK_CURSOR)
    if row is None:
        return None
    vxids = row["probe_vxids"]
    cursor = Cursor(
        window_start=row["window_start"],
        horizon=row["horizon"],
        probe_at=row["probe_at"],
        probe_horizon=row["probe_horizon"],
        probe_vxids=None if vxids is None else tuple(vxids),
        swept_at=row["swept_at"],
        r6_blocked_since=row["r6_blocked_since"],
        r6_waiting=row["r6_waiting"],
    )
    return cursor, row["now"]


# Every transaction of this database running now, but this one: each holds the lock on its
# own virtual transaction id from its first statement to its end. Autovacuum never inserts a
# key but may run for hours; it is left out when the role may see backend types (with
# pg_read_all_stats; without it the type reads as null and autovacuum counts, which only
# holds the window back).
_RUNNING = """
SELECT coalesce(array_agg(l.virtualxid), '{}')
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_backend_pid()
  AND a.datname = current_database()
  AND a.backend_type IS DISTINCT FROM 'autovacuum worker'
"""


async def running_transactions(conn: Connection) -> tuple[datetime, frozenset[str]]:
    """The database clock, then the virtual transaction ids running after that moment."""
    at: datetime = await conn.fetchval("SELECT clock_timestamp()")
    running: list[str] = await conn.fetchval(_RUNNING)
    return at, frozenset(running)


_SAVE_CURSOR = """
UPDATE late_key_sweep
SET window_start = $1, horizon = $2, probe_at = $3, probe_horizon = $4, probe_vxids = $5,
    swept_at = $6
"""


async def save_cursor(conn: Connection, cursor: Cursor) -> None:
    await conn.execute(
        _SAVE_CURSOR,
        cursor.window_start,
        cursor.horizon,
        cursor.probe_at,
        cursor.probe_horizon,
        None if cursor.probe_vxids is None else list(cursor.probe_vxids),
        cursor.swept_at,
    )


async def save_r6_state(conn: Connection, blocked_since: datetime | None, waiting: int) -> None:
    await conn.execute(
        "UPDATE late_key_sweep SET r6_blocked_since = $1, r6_waiting = $2", blocked_since, waiting
    )


# R1 re-check (domain.late_keys.recheck_removal) over the live keys created since `$1`:
# the earliest removal in the ledger with T >= created_at names the revocation.
_RECHECK = f"""
WITH covered AS (
    SELECT k.id, r.ref
    FROM api_keys AS k
    CROSS JOIN LATERAL (
        SELECT 'event:' || e.source || '#' || e.event_id AS ref
        FROM membership_events AS e
        WHERE e.account_id = k.account_id AND e.iam_id = k.iam_id
          AND e.change = 'removed' AND e.event_time >= k.created_at
        ORDER BY e.event_time, e.event_id, e.source
        LIMIT 1
    ) AS r
    WHERE k.revoked_at IS NULL AND k.created_at >= $1
)
UPDATE api_keys AS k
SET revoked_at = now(), revocation_reason = '{REASON_MEMBER_REMOVED}', revoked_by = covered.ref
FROM covered
WHERE k.id = covered.id AND k.revoked_at IS NULL
RETURNING k.id, k.account_id, k.iam_id, k.revoked_by
"""


def _revoked(rows: Sequence[asyncpg.Record]) -> list[Revoked]:
    return [Revoked(r["id"], r["account_id"], r["iam_id"], r["revoked_by"]) for r in rows]


async def recheck(conn: Connection, since: datetime) -> list[Revoked]:
    """R1 re-check of the live keys created at or after `since`."""
    return _revoked(await conn.fetch(_RECHECK, since))


# A cheap first filter; `_LATE` decides. Keys of members removed only by a baseline pass it
# and are dropped at the next review.
_NOTE_FROM_KEYS = """
INSERT INTO late_key_candidates (key_id, account_id, iam_id, created_at)
SELECT k.id, k.account_id, k.iam_id, k.created_at
FROM api_keys AS k
JOIN account_memberships AS m ON m.account_id = k.account_id AND m.iam_id = k.iam_id
WHERE k.revoked_at IS NULL AND k.created_at >= $1
  AND m.state = 'removed' AND k.created_at > m.changed_at
ON CONFLICT DO NOTHING
"""


async def note_new_keys(conn: Connection, since: datetime) -> None:
    """R6 candidates among the live keys created at or after `since`."""
    await conn.execute(_NOTE_FROM_KEYS, since)


_NOTE_FROM_REMOVALS = """
INSERT INTO late_key_candidates (key_id, account_id, iam_id, created_at)
SELECT k.id, k.account_id, k.iam_id, k.created_at
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS r(account_id, iam_id, removed_at)
JOIN api_keys AS k ON k.account_id = r.account_id AND k.iam_id = r.iam_id
WHERE k.revoked_at IS NULL AND k.created_at > r.removed_at
ON CONFLICT DO NOTHING
"""


async def note_removed_members(
    conn: Connection, removals: Sequence[tuple[str, str, datetime]]
) -> None:
    """R6 candidates from removals just applied: the member's live keys created after T.
    (A removal that arrives after a key it predates makes that key late too.)"""
    if removals:
        await conn.execute(
            _NOTE_FROM_REMOVALS,
            [r[0] for r in removals],
            [r[1] for r in removals],
            [r[2] for r in removals],
        )


# R6 (domain.late_keys.late_key_removal) for the candidates: the key is live, the member is
# removed, its latest removal is in the ledger (the row's changed_at is that removal's time)
# and the key was created after it.
_LATE = """
SELECT c.key_id, k.created_at, r.ref
FROM late_key_candidates AS c
JOIN api_keys AS k ON k.id = c.key_id AND k.revoked_at IS NULL
JOIN account_memberships AS m
  ON m.account_id = k.account_id AND m.iam_id = k.iam_id AND m.state = 'removed'
CROSS JOIN LATERAL (
    SELECT 'event:' || e.source || '#' || e.event_id AS ref, e.event_time
    FROM membership_events AS e
    WHERE e.account_id = k.account_id AND e.iam_id = k.iam_id AND e.change = 'removed'
    ORDER BY e.event_time DESC, e.event_id DESC, e.source DESC
    LIMIT 1
) AS r
WHERE r.event_time = m.changed_at AND k.created_at > r.event_time
"""

_FORGET_NOT_LATE = f"""
DELETE FROM late_key_candidates
WHERE key_id NOT IN (SELECT key_id FROM ({_LATE}) AS late)
"""


async def review_candidates(conn: Connection) -> list[LateKey]:
    """Drops the candidates that are no longer late; returns those that still are."""
    await conn.execute(_FORGET_NOT_LATE)
    return [LateKey(r["key_id"], r["created_at"]) for r in await conn.fetch(_LATE)]


_REVOKE_LATE = f"""
WITH late AS ({_LATE} AND c.key_id = ANY($1::uuid[])),
revoked AS (
    UPDATE api_keys AS k
    SET revoked_at = now(), revocation_reason = '{REASON_ORPHANED}', revoked_by = late.ref
    FROM late
    WHERE k.id = late.key_id AND k.revoked_at IS NULL
    RETURNING k.id, k.account_id, k.iam_id, k.revoked_by
), forgotten AS (
    DELETE FROM late_key_candidates WHERE key_id IN (SELECT id FROM revoked)
)
SELECT * FROM revoked
"""


async def revoke_late(conn: Connection, key_ids: Sequence[UUID]) -> list[Revoked]:
    """R6: revokes those of `key_ids` that are still late, checked again as it writes."""
    if not key_ids:
        return []
    return _revoked(await conn.fetch(_REVOKE_LATE, list(key_ids)))
