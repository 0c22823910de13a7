"""SQL of the remembered source rows (docs/cdc.md): row key -> member, for deletes that carry
only the row key (a source table without REPLICA IDENTITY FULL)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.domain.change_events import RowMember
from cleanup_worker.domain.events import Member

# The newest position wins whatever order the writes come in (redeliveries, replays).
_REMEMBER = """
INSERT INTO cdc_rows (source, row_key, account_id, iam_id, position)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (source, row_key) DO UPDATE
   SET account_id = EXCLUDED.account_id, iam_id = EXCLUDED.iam_id, position = EXCLUDED.position
 WHERE cdc_rows.position < EXCLUDED.position
"""

_RECALL = """
SELECT r.source, r.row_key, r.account_id, r.iam_id, r.position
  FROM cdc_rows r
  JOIN unnest($1::text[], $2::text[]) AS q(source, row_key) USING (source, row_key)
"""


def newest(rows: Iterable[RowMember]) -> list[RowMember]:
    """One row per (source, row key): the one at the newest position."""
    best: dict[tuple[str, str], RowMember] = {}
    for row in rows:
        known = best.get((row.source, row.row_key))
        if known is None or known.position < row.position:
            best[(row.source, row.row_key)] = row
    return sorted(best.values(), key=lambda r: (r.source, r.row_key))


async def remember(conn: Connection, rows: Sequence[RowMember]) -> None:
    """Notes what each row named (sorted and unique, so concurrent writers never deadlock)."""
    unique = newest(rows)
    if not unique:
        return
    await conn.execute(
        _REMEMBER,
        [r.source for r in unique],
        [r.row_key for r in unique],
        [r.member[0] for r in unique],
        [r.member[1] for r in unique],
        [r.position for r in unique],
    )


async def recall(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[Member, int]]:
    """The remembered member of each (source, row key) that has one, with its position."""
    if not keys:
        return {}
    rows = await conn.fetch(_RECALL, [k[0] for k in keys], [k[1] for k in keys])
    return {
        (r["source"], r["row_key"]): ((r["account_id"], r["iam_id"]), r["position"]) for r in rows
    }
