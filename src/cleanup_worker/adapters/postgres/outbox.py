"""SQL of the revocation outbox ("The outbox", docs/design.md): the relay claims rows without
blocking other replicas, deletes them once the broker acknowledged their notices, and reports the
backlog. The rows themselves are written by the revoking statements in `keys.py`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cleanup_worker.adapters.postgres.connections import Connection, Pool


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One revoked key waiting for its notice to be acknowledged."""

    id: int
    key_id: str  # the key's id as text, whatever the key table's id type
    account_id: str
    iam_id: str
    reason: str
    revoked_at: datetime
    revoked_by: str
    event_time: datetime


# Oldest first; rows another relay holds are skipped, not waited for, so replicas share the
# outbox without blocking each other, and a row is held by one relay at a time.
_CLAIM = """
SELECT id, key_id, account_id, iam_id, reason, revoked_at, revoked_by, event_time
FROM revocation_outbox
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

_DELETE = "DELETE FROM revocation_outbox WHERE id = ANY($1::bigint[])"

_BACKLOG = "SELECT count(*) AS rows, min(created_at) AS oldest FROM revocation_outbox"


async def claim(conn: Connection, limit: int) -> list[OutboxRow]:
    """Locks up to `limit` of the oldest rows no one else holds, until the transaction ends."""
    return [OutboxRow(**dict(row)) for row in await conn.fetch(_CLAIM, limit)]


async def delete(conn: Connection, ids: Sequence[int]) -> None:
    """Removes rows whose notices the broker acknowledged."""
    await conn.execute(_DELETE, list(ids))


@dataclass(frozen=True, slots=True)
class Backlog:
    rows: int
    oldest: datetime | None


async def backlog(pool: Pool) -> Backlog:
    """How many notices wait, and since when the oldest."""
    row = await pool.fetchrow(_BACKLOG)
    assert row is not None  # an aggregate without GROUP BY returns one row
    return Backlog(row["rows"], row["oldest"])
