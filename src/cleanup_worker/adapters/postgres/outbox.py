"""SQL of the revocation outbox ("The outbox", docs/design.md): the relay claims rows without
blocking other replicas, deletes them once the broker acknowledged their notices, and reports the
backlog. The rows themselves are written by the revoking statements (key_statements.py), one per
statement and at most OUTBOX_ROW_NOTICES notices each, as parallel arrays (migration 0014)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from cleanup_worker.adapters.postgres.connections import Connection, Pool

# At most this many notices in one outbox row (migration 0014's CHECK): a statement that
# revokes more writes several rows, so a relay's batch stays bounded however many keys one
# member or one backfill batch had.
OUTBOX_ROW_NOTICES = 500


class PendingNotice(NamedTuple):
    """One revoked key waiting for its notice to be acknowledged. (A tuple: the relay makes
    one per notice, at a quarter of a frozen dataclass's cost.)"""

    key_id: str  # the key's id as text, whatever the key table's id type
    account_id: str
    iam_id: str
    reason: str
    revoked_at: datetime
    revoked_by: str
    event_time: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """Outbox rows this transaction holds, and their notices in the order they were written."""

    row_ids: list[int]
    notices: list[PendingNotice]
    more: bool  # whether rows may be left that no one holds


# The oldest rows no one else holds (SKIP LOCKED: replicas share the outbox without blocking
# each other, and a row is held by one relay at a time); of the $1 rows locked, those before
# the $2-th notice are taken. The others are released when the transaction ends.
_CLAIM = """
SELECT id, key_ids, account_ids, iam_ids, reasons, revoked_ats, revoked_bys, event_times
FROM (
    SELECT *, sum(notices) OVER (ORDER BY id) - notices AS before
    FROM (
        SELECT * FROM revocation_outbox_batches ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
    ) AS locked
) AS running
WHERE before < $2
ORDER BY id
"""

_DELETE = "DELETE FROM revocation_outbox_batches WHERE id = ANY($1::bigint[])"

# Rows of revocation_outbox (migration 0009: one per key), which replicas of the previous
# version write during a rolling upgrade, moved into one row of the table above: the same
# transaction deletes them, so each notice is in exactly one row. Rows an old relay is
# publishing are skipped; it deletes them itself.
_FOLD_SINGLE_ROWS = f"""
WITH moved AS (
    DELETE FROM revocation_outbox
    WHERE id IN (
        SELECT id FROM revocation_outbox ORDER BY id
        LIMIT {OUTBOX_ROW_NOTICES} FOR UPDATE SKIP LOCKED
    )
    RETURNING *
), folded AS (
    INSERT INTO revocation_outbox_batches
        (notices, key_ids, account_ids, iam_ids, reasons, revoked_ats, revoked_bys,
         event_times, created_at)
    SELECT count(*), array_agg(key_id ORDER BY id), array_agg(account_id ORDER BY id),
           array_agg(iam_id ORDER BY id), array_agg(reason ORDER BY id),
           array_agg(revoked_at ORDER BY id), array_agg(revoked_by ORDER BY id),
           array_agg(event_time ORDER BY id), min(created_at)
    FROM moved
    HAVING count(*) > 0
    RETURNING notices
)
SELECT coalesce(sum(notices), 0) FROM folded
"""

_BACKLOG = """
SELECT coalesce(sum(notices), 0) + (SELECT count(*) FROM revocation_outbox)
           AS notices,
       least(min(created_at), (SELECT min(created_at) FROM revocation_outbox)) AS oldest
FROM revocation_outbox_batches
"""


async def claim(conn: Connection, rows: int, notices: int) -> Claim:
    """Locks up to `rows` of the oldest rows no one else holds, until the transaction ends,
    and takes them in order up to about `notices` notices (at least one row, and never more
    than `notices` + OUTBOX_ROW_NOTICES - 1)."""
    row_ids: list[int] = []
    pending: list[PendingNotice] = []
    for row_id, *columns in await conn.fetch(_CLAIM, rows, notices):
        row_ids.append(row_id)
        pending.extend(map(PendingNotice, *columns))
    # Fewer rows than asked for, and fewer notices: every row no one held was taken.
    return Claim(row_ids, pending, more=len(row_ids) == rows or len(pending) >= notices)


async def delete(conn: Connection, row_ids: Sequence[int]) -> None:
    """Removes rows whose notices the broker acknowledged, every one of them."""
    await conn.execute(_DELETE, list(row_ids))


async def fold_single_rows(pool: Pool) -> int:
    """Moves the previous version's rows (one per key) into rows of this version's table,
    OUTBOX_ROW_NOTICES at a time until none is left; returns how many notices it moved."""
    moved = 0
    while batch := int(await pool.fetchval(_FOLD_SINGLE_ROWS)):
        moved += batch
    return moved


@dataclass(frozen=True, slots=True)
class Backlog:
    notices: int
    oldest: datetime | None


async def backlog(pool: Pool) -> Backlog:
    """How many notices wait, and since when the oldest."""
    row = await pool.fetchrow(_BACKLOG)
    assert row is not None  # an aggregate without GROUP BY returns one row
    return Backlog(row["notices"], row["oldest"])
