"""SQL that revokes API keys. Every revocation in the product goes through this module (R1, R5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cleanup_worker.domain.events import MembershipEvent

REASON_MEMBER_REMOVED = "member_removed"
REASON_ORPHANED = "orphaned"

# R1 as one statement for a whole batch. `revoked_at IS NULL` keeps R4: a revoked key is
# never touched again, so its first reason and revoker stay.
_REVOKE_FOR_REMOVALS = """
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
    RETURNING 1
)
SELECT count(*) FROM revoked
"""


async def revoke_for_removals(conn: Any, removals: Sequence[MembershipEvent]) -> int:
    """R1: revokes the live keys each removal covers; at most one removal per member."""
    if not removals:
        return 0
    count: int = await conn.fetchval(
        _REVOKE_FOR_REMOVALS,
        [event.account_id for event in removals],
        [event.iam_id for event in removals],
        [event.time for event in removals],
        [event.ref for event in removals],
    )
    return count
