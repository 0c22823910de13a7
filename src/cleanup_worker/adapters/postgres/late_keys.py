"""SQL of the late-key sweep ("R1 re-check", "R6 late keys", docs/design.md): its shared cursor, and
R6's candidates.

The revoking statements are in keys.py, with every other revocation. Migration 0008
explains the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import fill, key_texts
from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.sweep_revocations import late_keys_statement


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
class LateKey:
    """An R6 candidate that is still late: live, created after the latest removal."""

    key_id: str  # as text, whatever the key table's id type
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


# A cheap first filter; `_LATE` decides. Keys of members removed only by a baseline pass it
# and are dropped at the next review.
_NOTE_FROM_KEYS = """
INSERT INTO late_key_candidates (key_id, account_id, iam_id, created_at)
SELECT {id_text}, {account_text}, {user_text}, {created_tz}
FROM {keys} AS k
JOIN account_memberships AS m ON m.account_id = {account_text} AND m.iam_id = {user_text}
WHERE {live} AND {created} >= {since}
  AND m.state = 'removed' AND {created_tz} > m.changed_at
ON CONFLICT DO NOTHING
"""


@cache
def _note_from_keys(table: KeyTable) -> str:
    return fill(
        _NOTE_FROM_KEYS,
        **key_texts(table),
        keys=table.name,
        live=table.live("k"),
        created=table.created(),
        since=table.to_created("$1::timestamptz"),
    )


async def note_new_keys(conn: Connection, since: datetime) -> None:
    """R6 candidates among the live keys created at or after `since`."""
    await conn.execute(_note_from_keys(key_table.current()), since)


_FORGET_NOT_LATE = """
DELETE FROM late_key_candidates
WHERE key_id NOT IN (SELECT key_id FROM ({late_keys}) AS late)
"""


async def review_candidates(conn: Connection) -> list[LateKey]:
    """Drops the candidates that are no longer late; returns those that still are."""
    late_keys = late_keys_statement(key_table.current())
    await conn.execute(fill(_FORGET_NOT_LATE, late_keys=late_keys))
    return [LateKey(r["key_id"], r["created_at"]) for r in await conn.fetch(late_keys)]
