"""SQL of the late-key sweep's revocations ("R1 re-check", "R6 late keys", docs/design.md):
the re-check of the recently created live keys, R6's candidates that are still late, and
their revocation. Built like every revocation (keys.py, which re-exports these) from the key
table's parts, with the same outbox and audit CTEs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import asyncpg

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import fill, key_texts, revoking
from cleanup_worker.adapters.postgres.key_table import KeyTable

__all__ = [
    "RevokedKey",
    "late_keys_statement",
    "r6_statement",
    "recheck_recent_keys",
    "recheck_statement",
    "revoke_late_keys",
]


@dataclass(frozen=True, slots=True)
class RevokedKey:
    """A key the late-key sweep revoked: enough to log it, never its hash."""

    key_id: str
    account_id: str
    iam_id: str
    revoked_by: str


def _revoked_keys(rows: Sequence[asyncpg.Record]) -> list[RevokedKey]:
    return [RevokedKey(r["id"], r["account_id"], r["iam_id"], r["revoked_by"]) for r in rows]


def _swept_columns(table: KeyTable, revoked_by: str) -> str:
    texts = key_texts(table)
    return (
        f"{texts['id_text']} AS id, {texts['account_text']} AS account_id, "
        f"{texts['user_text']} AS iam_id, {revoked_by} AS revoked_by"
    )


# The R1 re-check (domain.late_keys.recheck_removal) of the live keys created since `$1`: the
# earliest removal in the ledger with T >= created_at names the revocation, and its time is
# the notice's event time, as for R1.
_RECHECK = """
WITH covered AS (
    SELECT {id} AS id, r.ref, r.event_time
    FROM {keys} AS k
    CROSS JOIN LATERAL (
        SELECT 'event:' || e.source || '#' || e.event_id AS ref, e.event_time
        FROM membership_events AS e
        WHERE e.account_id = {account_text} AND e.iam_id = {user_text}
          AND e.change = 'removed' AND e.event_time >= {created_tz}
        ORDER BY e.event_time, e.event_id, e.source
        LIMIT 1
    ) AS r
    WHERE {live} AND {created} >= {since}
), revoked AS (
    UPDATE {keys} AS k
    SET {revoke}
    FROM covered
    WHERE {id} = covered.id AND {live}
    RETURNING {returning}
){announce}{audit}
SELECT id, account_id, iam_id, revoked_by FROM revoked
"""


@cache
def recheck_statement(table: KeyTable, *, announce: bool) -> str:
    """The R1 re-check of the live keys of `table` created at or after $1."""
    return revoking(
        table,
        fill(_RECHECK, **key_texts(table), since=table.to_created("$1::timestamptz")),
        announce=announce,
        plain=_swept_columns(table, "covered.ref"),
        reason="'member_removed'",
        revoked_by="covered.ref",
        event_time="covered.event_time",
    )


async def recheck_recent_keys(
    conn: Connection, since: datetime, *, announce: bool
) -> list[RevokedKey]:
    """R1 re-check of the live keys created at or after `since`. `announce`: also write
    their notices to the outbox."""
    statement = recheck_statement(key_table.current(), announce=announce)
    return _revoked_keys(await conn.fetch(statement, since))


# R6 (domain.late_keys.late_key_removal) for the candidates of `late_key_candidates`: the key
# is live, the member is removed, its latest removal is in the ledger (the row's changed_at
# is that removal's time) and the key was created after it.
#
# Driven by the candidates, whatever the statistics say: each join is a LATERAL lookup of at
# most one row (LIMIT 1 keeps the planner from flattening it into a join it may reorder). As
# plain joins, a plan made while account_memberships was small started from the removed
# members and looked up each one's keys, 30-115 ms per sweep (two a second) with no candidate
# at all (bench.stalls, docs/performance.md).
_LATE_KEYS = """
SELECT c.key_id, {created_tz} AS created_at, r.ref
FROM late_key_candidates AS c
CROSS JOIN LATERAL (
    SELECT * FROM {keys} AS k WHERE {id} = {candidate_id} AND {live} LIMIT 1
) AS k
CROSS JOIN LATERAL (
    SELECT m.changed_at FROM account_memberships AS m
    WHERE m.account_id = {account_text} AND m.iam_id = {user_text} AND m.state = 'removed'
    LIMIT 1
) AS m
CROSS JOIN LATERAL (
    SELECT 'event:' || e.source || '#' || e.event_id AS ref, e.event_time
    FROM membership_events AS e
    WHERE e.account_id = {account_text} AND e.iam_id = {user_text} AND e.change = 'removed'
    ORDER BY e.event_time DESC, e.event_id DESC, e.source DESC
    LIMIT 1
) AS r
WHERE r.event_time = m.changed_at AND {created_tz} > r.event_time
"""


@cache
def late_keys_statement(table: KeyTable) -> str:
    """R6's candidates that are still late, each with its created time and removal."""
    return fill(
        _LATE_KEYS,
        **key_texts(table),
        keys=table.name,
        id=table.id(),
        live=table.live("k"),
        candidate_id=table.typed_stored("c.key_id", table.mapping.id_column),
    )


# No event asked for an R6 revocation when it happens, so, as for the backfill, the notice's
# event time is the revocation's.
_REVOKE_LATE = """
WITH late AS ({late_keys} AND c.key_id = ANY($1::text[])),
revoked AS (
    UPDATE {keys} AS k
    SET {revoke}
    FROM late
    WHERE {id} = {late_id} AND {live}
    RETURNING {returning}
){announce}{audit}, forgotten AS (
    DELETE FROM late_key_candidates WHERE key_id IN (SELECT id FROM revoked)
)
SELECT id, account_id, iam_id, revoked_by FROM revoked
"""


@cache
def r6_statement(table: KeyTable, *, announce: bool) -> str:
    """R6 for the candidates $1 (ids as text) that are still late, in `table`."""
    late_id = table.typed_stored("late.key_id", table.mapping.id_column)
    return revoking(
        table,
        fill(_REVOKE_LATE, late_keys=late_keys_statement(table), late_id=late_id),
        announce=announce,
        plain=_swept_columns(table, "late.ref"),
        reason="'orphaned'",
        revoked_by="late.ref",
        event_time="now()",
    )


async def revoke_late_keys(
    conn: Connection, key_ids: Sequence[str], *, announce: bool
) -> list[RevokedKey]:
    """R6: revokes those of `key_ids` that are still late, checked again as it writes.
    `announce`: also write their notices to the outbox."""
    if not key_ids:
        return []
    statement = r6_statement(key_table.current(), announce=announce)
    return _revoked_keys(await conn.fetch(statement, list(key_ids)))
