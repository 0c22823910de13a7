"""SQL that revokes API keys. Every revocation in the product goes through this module: R1,
its re-check, R5 and R6.

With notices on (CLEANUP_REVOCATIONS_TOPIC), each revoking statement also writes one
`revocation_outbox` row per key it revoked, from its own RETURNING: the same statement, so
the same transaction, and no statement per key ("Revocation notices", docs/design.md).
Without, the statements are the plain ones: no outbox, no cost.

The statements are written as they run, with `{name}` marking where a part goes; `_fill`
puts the parts in by plain replacement (not `str.format`), so the SQL's own braces, such as
the empty array '{}', stay as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from uuid import UUID

import asyncpg

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.domain.events import MembershipEvent

REASON_MEMBER_REMOVED = "member_removed"
REASON_ORPHANED = "orphaned"

# One outbox row per key in `revoked` (which returns the key's columns and `event_time`).
_ANNOUNCE = """, announced AS (
    INSERT INTO revocation_outbox
        (key_id, account_id, iam_id, reason, revoked_at, revoked_by, event_time)
    SELECT id, account_id, iam_id, revocation_reason, revoked_at, revoked_by, event_time
    FROM revoked
)"""


_ANNOUNCED_COLUMNS = (
    "k.id, k.account_id, k.iam_id, k.revocation_reason, k.revoked_at, k.revoked_by, "
    "{event_time} AS event_time"
)


def _fill(statement: str, **parts: str) -> str:
    """`statement` with each `{name}` replaced by `parts[name]`."""
    for name, part in parts.items():
        statement = statement.replace("{" + name + "}", part)
    return statement


def _with_and_without_notices(statement: str, *, plain: str, event_time: str) -> dict[bool, str]:
    """The statement keyed by "announce?": `{returning}` is what `revoked` returns (`plain`
    without notices), `{announce}` where the outbox CTE goes."""
    announced = _fill(_ANNOUNCED_COLUMNS, event_time=event_time)
    return {
        False: _fill(statement, returning=plain, announce=""),
        True: _fill(statement, returning=announced, announce=_ANNOUNCE),
    }


# R6's candidates among the removed members' keys: those created after the removal. In the
# same statement as R1, from the same snapshot, so the index range scan (created_at > T) never
# meets the versions R1 is revoking; a statement of its own cost a quarter of the consumer's
# throughput (docs/performance.md, late keys).
_NOTE_LATE = """, noted AS (
    INSERT INTO late_key_candidates (key_id, account_id, iam_id, created_at)
    SELECT k.id, k.account_id, k.iam_id, k.created_at
    FROM removal
    JOIN api_keys AS k ON k.account_id = removal.account_id AND k.iam_id = removal.iam_id
    WHERE k.revoked_at IS NULL AND k.created_at > removal.removed_at
    ON CONFLICT DO NOTHING
)"""

# R1 as one statement for a whole batch. `revoked_at IS NULL` keeps R4: a revoked key is
# never touched again, so its first reason and revoker stay.
_R1 = """
WITH removal AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
        AS r(account_id, iam_id, removed_at, revoked_by)
), revoked AS (
    UPDATE api_keys AS k
    SET revoked_at = now(), revocation_reason = 'member_removed', revoked_by = removal.revoked_by
    FROM removal
    WHERE k.account_id = removal.account_id
      AND k.iam_id = removal.iam_id
      AND k.created_at <= removal.removed_at
      AND k.revoked_at IS NULL
    RETURNING {returning}
){announce}{note}
SELECT count(*) FROM revoked
"""
# Keyed by (announce?, note late keys?).
_REVOKE_FOR_REMOVALS = {
    (announce, note): statement
    for note in (False, True)
    for announce, statement in _with_and_without_notices(
        _fill(_R1, note=_NOTE_LATE if note else ""),
        plain="1",
        event_time="removal.removed_at",
    ).items()
}


async def revoke_for_removals(
    conn: Connection,
    removals: Sequence[MembershipEvent],
    *,
    announce: bool,
    note_late_keys: bool = False,
) -> int:
    """R1: revokes the live keys each removal covers; at most one removal per member.
    `announce`: also write their notices to the outbox. `note_late_keys`: note the keys a
    removal leaves (created after it) for R6 to judge."""
    if not removals:
        return 0
    count: int = await conn.fetchval(
        _REVOKE_FOR_REMOVALS[(announce, note_late_keys)],
        [event.account_id for event in removals],
        [event.iam_id for event in removals],
        [event.time for event in removals],
        [event.ref for event in removals],
    )
    return count


class MembershipSource(StrEnum):
    """Where R5 reads membership: the worker's table, or the operator's file loaded for one run.

    The values are table names; they are the only names ever formatted into R5's SQL.
    """

    TABLE = "account_memberships"
    FILE = "pg_temp.backfill_memberships"  # a session TEMP table, same columns


# R5 for the key `k` (a row of api_keys) and `m`, its membership row LEFT JOINed (all null
# when there is none): the OrphanReason value, or null when the membership keeps the key.
# It mirrors domain.rules.orphan_reason, which is the spec; the tests compare the two.
# Whether `k` is already revoked is for the caller to test (`k.revoked_at IS NULL`).
ORPHAN_REASON_SQL = """CASE
        WHEN m.account_id IS NULL THEN 'no_membership'
        WHEN m.state <> 'active' THEN 'membership_removed'
        WHEN m.member_since IS NOT NULL AND k.created_at < m.member_since
            THEN 'created_before_member_since'
    END"""

# R5 backfill for a batch of candidate keys, re-checked at write time. The verdict is a
# correlated subquery so that each key costs one index probe of the membership table
# (a join here is planned as a scan of the whole table per batch). Under READ COMMITTED a
# key that a concurrent transaction revoked meanwhile is re-read after that transaction
# commits, fails `revoked_at IS NULL` and keeps its first reason and revoker (R4).
_VERDICT = """(SELECT {reason}
     FROM (VALUES (true)) AS one (x)
     LEFT JOIN {memberships} AS m ON m.account_id = k.account_id AND m.iam_id = k.iam_id)"""

_REVOKE_ORPHANS = """
WITH revoked AS (
    UPDATE api_keys AS k
    SET revoked_at = now(), revocation_reason = $3, revoked_by = $2
    WHERE k.id = ANY($1::uuid[])
      AND k.revoked_at IS NULL
      AND {verdict} IS NOT NULL
    RETURNING {returning}
){announce}
SELECT coalesce(array_agg(id), '{}') FROM revoked
"""

_REVOKE_ORPHANS_SQL = {
    source: _with_and_without_notices(
        _fill(
            _REVOKE_ORPHANS,
            verdict=_fill(_VERDICT, reason=ORPHAN_REASON_SQL, memberships=source.value),
        ),
        plain="k.id",
        event_time="k.revoked_at",
    )
    for source in MembershipSource
}


async def revoke_orphans(
    conn: Connection,
    key_ids: Sequence[UUID],
    revoked_by: str,
    memberships: MembershipSource,
    *,
    announce: bool,
) -> list[UUID]:
    """R5: revokes those of `key_ids` that are orphaned now; returns the ids it revoked.

    Keys that a membership keeps, or that are already revoked, are left as they are.
    `announce`: also write their notices to the outbox.
    """
    if not key_ids:
        return []
    revoked: list[UUID] = await conn.fetchval(
        _REVOKE_ORPHANS_SQL[memberships][announce], list(key_ids), revoked_by, REASON_ORPHANED
    )
    return revoked


@dataclass(frozen=True, slots=True)
class RevokedKey:
    """A key the late-key sweep revoked: enough to log it, never its hash."""

    key_id: UUID
    account_id: str
    iam_id: str
    revoked_by: str


def _revoked_keys(rows: Sequence[asyncpg.Record]) -> list[RevokedKey]:
    return [RevokedKey(r["id"], r["account_id"], r["iam_id"], r["revoked_by"]) for r in rows]


_SWEPT_COLUMNS = "k.id, k.account_id, k.iam_id, k.revoked_by"

# The R1 re-check (domain.late_keys.recheck_removal) of the live keys created since `$1`: the
# earliest removal in the ledger with T >= created_at names the revocation, and its time is
# the notice's event time, as for R1.
_RECHECK = _with_and_without_notices(
    """
WITH covered AS (
    SELECT k.id, r.ref, r.event_time
    FROM api_keys AS k
    CROSS JOIN LATERAL (
        SELECT 'event:' || e.source || '#' || e.event_id AS ref, e.event_time
        FROM membership_events AS e
        WHERE e.account_id = k.account_id AND e.iam_id = k.iam_id
          AND e.change = 'removed' AND e.event_time >= k.created_at
        ORDER BY e.event_time, e.event_id, e.source
        LIMIT 1
    ) AS r
    WHERE k.revoked_at IS NULL AND k.created_at >= $1
), revoked AS (
    UPDATE api_keys AS k
    SET revoked_at = now(), revocation_reason = 'member_removed', revoked_by = covered.ref
    FROM covered
    WHERE k.id = covered.id AND k.revoked_at IS NULL
    RETURNING {returning}
){announce}
SELECT id, account_id, iam_id, revoked_by FROM revoked
""",
    plain=_SWEPT_COLUMNS,
    event_time="covered.event_time",
)


async def recheck_recent_keys(
    conn: Connection, since: datetime, *, announce: bool
) -> list[RevokedKey]:
    """R1 re-check of the live keys created at or after `since`. `announce`: also write
    their notices to the outbox."""
    return _revoked_keys(await conn.fetch(_RECHECK[announce], since))


# R6 (domain.late_keys.late_key_removal) for the candidates of `late_key_candidates`: the key
# is live, the member is removed, its latest removal is in the ledger (the row's changed_at
# is that removal's time) and the key was created after it.
LATE_KEYS_SQL = """
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

# No event asked for an R6 revocation when it happens, so, as for the backfill, the notice's
# event time is the revocation's.
_REVOKE_LATE = _with_and_without_notices(
    _fill(
        """
WITH late AS ({late_keys} AND c.key_id = ANY($1::uuid[])),
revoked AS (
    UPDATE api_keys AS k
    SET revoked_at = now(), revocation_reason = 'orphaned', revoked_by = late.ref
    FROM late
    WHERE k.id = late.key_id AND k.revoked_at IS NULL
    RETURNING {returning}
){announce}, forgotten AS (
    DELETE FROM late_key_candidates WHERE key_id IN (SELECT id FROM revoked)
)
SELECT id, account_id, iam_id, revoked_by FROM revoked
""",
        late_keys=LATE_KEYS_SQL,
    ),
    plain=_SWEPT_COLUMNS,
    event_time="k.revoked_at",
)


async def revoke_late_keys(
    conn: Connection, key_ids: Sequence[UUID], *, announce: bool
) -> list[RevokedKey]:
    """R6: revokes those of `key_ids` that are still late, checked again as it writes.
    `announce`: also write their notices to the outbox."""
    if not key_ids:
        return []
    return _revoked_keys(await conn.fetch(_REVOKE_LATE[announce], list(key_ids)))
