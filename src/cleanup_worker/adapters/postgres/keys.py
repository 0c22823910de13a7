"""SQL that revokes API keys. Every revocation in the product goes through this module: R1
and R5 here, the R1 re-check and R6 from sweep_revocations.py (re-exported here).

With notices on (CLEANUP_REVOCATIONS_TOPIC), each revoking statement also writes the notices
of the keys it revoked to the outbox, from its own RETURNING: one row per 500 keys, in the same
statement, so the same transaction ("Revocation notices", docs/design.md).
Without, the statements are the plain ones: no outbox, no cost.

Each statement is built for the key table (key_table.py: our api_keys, or a mapped table of
another shape) from its parts (key_statements.py), once per table and variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.json_rows import json_rows
from cleanup_worker.adapters.postgres.key_statements import (
    MembershipSource,
    fill,
    key_texts,
    membership_join,
    orphan_reason_sql,
    revoking,
)
from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.sweep_revocations import (
    RevokedKey,
    late_keys_statement,
    r6_statement,
    recheck_recent_keys,
    recheck_statement,
    revoke_late_keys,
)
from cleanup_worker.domain.events import MembershipEvent

__all__ = [
    "REASON_MEMBER_REMOVED",
    "REASON_ORPHANED",
    "MembershipSource",
    "RevokedKey",
    "late_keys_statement",
    "r1_statement",
    "r5_statement",
    "r6_statement",
    "recheck_recent_keys",
    "recheck_statement",
    "revoke_for_removals",
    "revoke_late_keys",
    "revoke_orphans",
]

REASON_MEMBER_REMOVED = "member_removed"
REASON_ORPHANED = "orphaned"

# R6's candidates among the removed members' keys: those created after the removal. In the
# same statement as R1, from the same snapshot, so the index range scan (created_at > T) never
# meets the versions R1 is revoking; a statement of its own cost a quarter of the consumer's
# throughput (docs/performance.md, late keys).
_NOTE_LATE = """, noted AS (
    INSERT INTO late_key_candidates (key_id, account_id, iam_id, created_at)
    SELECT {id_text}, {account_text}, {user_text}, {created_tz}
    FROM removal
    JOIN {keys} AS k ON {account} = removal.account_id AND {user} = removal.iam_id
    WHERE {live} AND {created} > {removed_at}
    ON CONFLICT DO NOTHING
)"""

# R1 as one statement for a whole batch. `revoked_at IS NULL` (the live marker) keeps R4: a
# revoked key is never touched again, so its first reason and revoker stay.
_R1 = """
WITH removal AS (
    SELECT {removal_columns} FROM json_to_recordset($1::json)
        AS r(account_id text, iam_id text, removed_at timestamptz, revoked_by text)
), revoked AS (
    UPDATE {keys} AS k
    SET {revoke}
    FROM removal
    WHERE {account} = removal.account_id
      AND {user} = removal.iam_id
      AND {created} <= {removed_at}
      AND {live}
    RETURNING {returning}
){announce}{audit}{note}
SELECT count(*) FROM revoked
"""


@cache
def r1_statement(table: KeyTable, *, announce: bool, note_late_keys: bool) -> str:
    """R1 for a batch of removals in `table`: $1 their rows (`json_rows`: account_id, iam_id,
    removed_at, revoked_by)."""
    m = table.mapping
    account = table.typed("r.account_id", m.account_column)
    user = table.typed("r.iam_id", m.user_column)
    columns = "*"
    if (account, user) != ("r.account_id", "r.iam_id"):
        # The event's ids in the columns' own types, so the join probes the table's index.
        columns = f"{account} AS account_id, {user} AS iam_id, r.removed_at, r.revoked_by"
    removed_at = table.to_created("removal.removed_at")
    note = fill(_NOTE_LATE, **key_texts(table), removed_at=removed_at) if note_late_keys else ""
    return revoking(
        table,
        fill(_R1, note=note, removal_columns=columns, removed_at=removed_at),
        announce=announce,
        plain="1",
        reason="'member_removed'",
        revoked_by="removal.revoked_by",
        event_time="removal.removed_at",
    )


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
    table = key_table.current()
    m = table.mapping
    # A member whose ids the key columns cannot hold (text into a bigint) has no key there.
    fit = zip(
        table.fits(m.account_column, [e.account_id for e in removals]),
        table.fits(m.user_column, [e.iam_id for e in removals]),
        strict=True,
    )
    removals = [event for event, ok in zip(removals, fit, strict=True) if all(ok)]
    if not removals:
        return 0
    count: int = await conn.fetchval(
        r1_statement(table, announce=announce, note_late_keys=note_late_keys),
        json_rows(
            {
                "account_id": event.account_id,
                "iam_id": event.iam_id,
                "removed_at": event.time,
                "revoked_by": event.ref,
            }
            for event in removals
        ),
    )
    return count


# R5 backfill for a batch of candidate keys, re-checked at write time. The verdict is a
# correlated subquery so that each key costs one index probe of the membership table
# (a join here is planned as a scan of the whole table per batch). Under READ COMMITTED a
# key that a concurrent transaction revoked meanwhile is re-read after that transaction
# commits, fails the live marker and keeps its first reason and revoker (R4).
_VERDICT = """(SELECT {reason}
     FROM (VALUES (true)) AS one (x)
     LEFT JOIN {memberships})"""

_REVOKE_ORPHANS = """
WITH revoked AS (
    UPDATE {keys} AS k
    SET {revoke}
    WHERE {id} = ANY({ids})
      AND {live}
      AND {verdict} IS NOT NULL
    RETURNING {returning}
){announce}{audit}
SELECT coalesce(array_agg(id), '{}') FROM revoked
"""


@cache
def r5_statement(table: KeyTable, memberships: MembershipSource, *, announce: bool) -> str:
    """R5 for a batch of candidates ($1 ids as text, $2 revoked_by, $3 reason) in `table`."""
    verdict = fill(
        _VERDICT,
        reason=orphan_reason_sql(table),
        memberships=membership_join(table, memberships.value),
    )
    ids = table.typed_array("$1", table.mapping.id_column)
    return revoking(
        table,
        fill(_REVOKE_ORPHANS, verdict=verdict, ids=ids),
        announce=announce,
        plain=f"{key_texts(table)['id_text']} AS id",
        reason="$3::text",
        revoked_by="$2::text",
        event_time="now()",
    )


async def revoke_orphans(
    conn: Connection,
    key_ids: Sequence[str],
    revoked_by: str,
    memberships: MembershipSource,
    *,
    announce: bool,
) -> list[str]:
    """R5: revokes those of `key_ids` that are orphaned now; returns the ids it revoked.

    Keys that a membership keeps, or that are already revoked, are left as they are.
    `announce`: also write their notices to the outbox.
    """
    if not key_ids:
        return []
    table = key_table.current()
    revoked: list[str] = await conn.fetchval(
        r5_statement(table, memberships, announce=announce),
        [str(key_id) for key_id in key_ids],
        revoked_by,
        REASON_ORPHANED,
    )
    return revoked
