"""The backfill's assessment (docs/backfill.md): one read-only pass over the key table, a hash
join with the membership source, that writes the orphaned keys into a session TEMP table; the
run then walks that table by key id in batches (`next_candidates`). backfill_runs.py, which
re-exports these, keeps the run's lock and records.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import (
    MembershipSource,
    fill,
    key_texts,
    membership_join,
    orphan_reason_sql,
)
from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.domain.rules import Assessment, OrphanReason

__all__ = ["ASSESSMENT_WORK_MEM", "assess", "next_candidates"]

_CANDIDATES = "pg_temp.backfill_candidates"
# Enough for the hash of a few million memberships without spilling to disk; one session.
ASSESSMENT_WORK_MEM = "64MB"
# $1: only keys after this id (a resumed run), or null; $2: only these accounts, or null.
# CREATE TABLE AS, then one index build: cheaper than an index kept up to date row by row.
# The candidates keep the key's id in its own type: the run walks them in the key order that
# `$1` continues.
_FIND_CANDIDATES = """
CREATE TEMP TABLE backfill_candidates AS
SELECT id, account_id, reason
FROM (SELECT {id} AS id, {account_text} AS account_id, {reason} AS reason
      FROM {keys} AS k
      LEFT JOIN {memberships}
      WHERE {live}
        AND ($1::text IS NULL OR {id} > {after})
        AND ($2::text[] IS NULL OR {account} = ANY({accounts}))) AS keys
WHERE reason IS NOT NULL
"""
_TOTALS = """
SELECT count(*) AS keys, count(*) FILTER (WHERE {live}) AS unrevoked
FROM {keys} AS k
WHERE $1::text[] IS NULL OR {account} = ANY({accounts})
"""


@cache
def _statements(table: KeyTable, memberships: MembershipSource) -> tuple[str, str]:
    m = table.mapping
    parts = {
        **key_texts(table),
        "keys": table.name,
        "id": table.id(),
        "account": table.account(),
        "live": table.live("k"),
    }
    find = fill(
        _FIND_CANDIDATES,
        **parts,
        reason=orphan_reason_sql(table),
        memberships=membership_join(table, memberships.value),
        after=table.typed_stored("$1::text", m.id_column),
        accounts=table.typed_array("$2", m.account_column),
    )
    totals = fill(_TOTALS, **parts, accounts=table.typed_array("$1", m.account_column))
    return find, totals


_HAS_ACTIVE_MEMBERS = "SELECT EXISTS (SELECT 1 FROM {memberships} WHERE state = 'active')"
_BY_REASON = f"SELECT reason, count(*) AS keys FROM {_CANDIDATES} GROUP BY reason"
_ACCOUNTS = f"SELECT count(DISTINCT account_id) FROM {_CANDIDATES}"
_TOP_ACCOUNTS = f"""
SELECT account_id, count(*) AS keys FROM {_CANDIDATES}
GROUP BY account_id ORDER BY keys DESC, account_id LIMIT $1
"""
_SAMPLE = f"SELECT id::text AS id FROM {_CANDIDATES} ORDER BY id LIMIT $1"


async def assess(
    conn: Connection,
    memberships: MembershipSource,
    *,
    accounts: Sequence[str] | None = None,
    after: str | None = None,
    top: int = 10,
) -> Assessment:
    """Finds the orphaned keys in scope (after `after`, in `accounts`) from one snapshot.

    It only reads shared tables (and takes no row locks); its one write is the session's TEMP
    table of candidates that `next_candidates` then walks.
    """
    table = key_table.current()
    scope = None
    if accounts:
        # An account the key table's column cannot hold has no keys there.
        fits = table.fits(table.mapping.account_column, accounts)
        scope = [account for account, ok in zip(accounts, fits, strict=True) if ok]
    find, totals_sql = _statements(table, memberships)
    await conn.execute(f"DROP TABLE IF EXISTS {_CANDIDATES}")
    async with conn.transaction(isolation="repeatable_read"):
        # One pass over every key, and an index over what it found: no statement timeout.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SELECT set_config('work_mem', $1, true)", ASSESSMENT_WORK_MEM)
        # The planner cannot tell that only the orphans (a few percent) leave the join, so it
        # prices a parallel plan's tuples as if every key did and reads on one core. The pass
        # is the backfill's longest statement: let it use the parallel workers the server
        # allows (docs/performance.md, Backfill).
        await conn.execute("SET LOCAL parallel_tuple_cost = 0")
        await conn.execute(find, after, scope)
        totals = await conn.fetchrow(totals_sql, scope)
        assert totals is not None  # an aggregate without GROUP BY returns one row
        active: bool = await conn.fetchval(
            _HAS_ACTIVE_MEMBERS.format(memberships=memberships.value)
        )
        await conn.execute(f"CREATE UNIQUE INDEX ON {_CANDIDATES} (id)")
        by_reason = {
            OrphanReason(row["reason"]): row["keys"] for row in await conn.fetch(_BY_REASON)
        }
        accounts_affected: int = await conn.fetchval(_ACCOUNTS)
        top_accounts = await conn.fetch(_TOP_ACCOUNTS, top)
        sample = await conn.fetch(_SAMPLE, top)
    return Assessment(
        keys_scanned=totals["keys"],
        keys_unrevoked=totals["unrevoked"],
        by_reason=by_reason,
        accounts_affected=accounts_affected,
        top_accounts=[(row["account_id"], row["keys"]) for row in top_accounts],
        sample_key_ids=[row["id"] for row in sample],
        has_active_members=active,
    )


_FIRST_CANDIDATES = """
SELECT coalesce(array_agg(id::text ORDER BY id), '{}'),
       coalesce(array_agg(reason ORDER BY id), '{}')
FROM (SELECT id, reason FROM pg_temp.backfill_candidates ORDER BY id LIMIT $1) AS batch
"""
# The temp table's id has the key table's id type: `$2` (text) is cast to it ({id_type}).
_NEXT_CANDIDATES = """
SELECT coalesce(array_agg(id::text ORDER BY id), '{}'),
       coalesce(array_agg(reason ORDER BY id), '{}')
FROM (SELECT id, reason FROM pg_temp.backfill_candidates WHERE id > {after} ORDER BY id LIMIT $1)
    AS batch
"""


async def next_candidates(
    conn: Connection, after: str | None, limit: int
) -> dict[str, OrphanReason]:
    """The next `limit` candidate keys after `after` (keyset order: the key's id in its own
    type), each with the R5 case the assessment found, in key order; ids as text."""
    if after is None:
        row = await conn.fetchrow(_FIRST_CANDIDATES, limit)
    else:
        table = key_table.current()
        after_sql = table.typed_stored("$2::text", table.mapping.id_column)
        row = await conn.fetchrow(fill(_NEXT_CANDIDATES, after=after_sql), limit, after)
    assert row is not None  # an aggregate without GROUP BY returns one row
    return dict(zip(row[0], map(OrphanReason, row[1]), strict=True))
