"""The reads behind `cleanup-worker explain`: one member's ledger, baseline, row, keys, and what
the late-key sweep and the outbox know about those keys.

Read-only, and only what the `cleanup_operator` role may read (migration 0010): never the key
hash. Every statement is an index lookup by member or by key, so the answer stays fast on a
ledger of millions of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any
from uuid import UUID

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import fill, key_texts
from cleanup_worker.adapters.postgres.key_table import KeyTable

_MEMBER_OF_KEY = """
SELECT {account_text} AS account_id, {user_text} AS iam_id FROM {keys} AS k WHERE {id} = {key}
"""

_EVENTS = """
SELECT source, event_id, change, event_type, event_time, kafka_timestamp, applied_at,
       kafka_topic, kafka_partition, kafka_offset
FROM membership_events
WHERE account_id = $1 AND iam_id = $2
ORDER BY event_time, event_id, source
"""
_BASELINE = """
SELECT state, member_since, changed_at, captured_at
FROM membership_baselines WHERE account_id = $1 AND iam_id = $2
"""
_MEMBERSHIP = """
SELECT state, member_since, changed_at
FROM account_memberships WHERE account_id = $1 AND iam_id = $2
"""
# A key's columns as `explain` reads them: its name only where the table has one (ours), the
# revocation's reason and revoked_by from the table, or from key_revocations; `state` says
# whether the key is live, revoked, or in another state of the table's (left alone).
_KEY_COLUMNS = """
SELECT {id_text} AS id, {name} AS name, {created_tz} AS created_at,
       CASE WHEN {revoked} THEN {revoked_at} END AS revoked_at,
       CASE WHEN {revoked} THEN {reason} END AS revocation_reason,
       CASE WHEN {revoked} THEN {revoked_by} END AS revoked_by,
       CASE WHEN {live} THEN 'live' WHEN {revoked} THEN 'revoked' ELSE 'other' END AS state
FROM {keys} AS k {audit_join}
"""
_KEYS = """WHERE {account} = {account_param} AND {user} = {user_param}
ORDER BY {created}, {id}"""
_KEY = "WHERE {id} = {key}"


@cache
def _key_reads(table: KeyTable) -> tuple[str, str, str]:
    """The member of a key ($1), a member's keys ($1, $2), one key ($1), for `table`."""
    m = table.mapping
    parts = {
        **key_texts(table),
        "keys": table.name,
        "id": table.id(),
        "account": table.account(),
        "user": table.user(),
        "created": table.created(),
        "key": table.typed("$1::text", m.id_column),
        "account_param": table.typed("$1::text", m.account_column),
        "user_param": table.typed("$2::text", m.user_column),
    }
    columns = fill(
        _KEY_COLUMNS,
        **parts,
        name="k.name" if m.is_default else "''",
        revoked=table.revoked("k"),
        live=table.live("k"),
        revoked_at=table.revoked_at(),
        reason=table.reason(),
        revoked_by=table.revoked_by(),
        audit_join=table.audit_join(),
    )
    return (
        fill(_MEMBER_OF_KEY, **parts),
        columns + fill(_KEYS, **parts),
        columns + fill(_KEY, **parts),
    )


# Events named by a `revoked_by` of another member are looked up too (a producer may reuse
# an identity): by every (source, id) split of the reference, since either may hold a '#'.
_EVENTS_BY_IDENTITY = """
SELECT e.source, e.event_id, e.account_id, e.iam_id, e.change, e.event_time, e.applied_at,
       e.kafka_timestamp
FROM membership_events AS e
JOIN unnest($1::text[], $2::text[]) AS t(source, event_id) USING (source, event_id)
"""
# Notices waiting: in this version's rows (one per revoking statement), and in the previous
# version's (one per key) until the relay has folded them in. Neither is indexed by key: the
# outbox is kept short by the relay, and `explain` reads it only for the member's keys.
_OUTBOX = """
SELECT n.key_id, o.created_at
FROM revocation_outbox_batches AS o, unnest(o.key_ids) AS n (key_id)
WHERE o.key_ids && $1::text[] AND n.key_id = ANY($1::text[])
UNION ALL
SELECT key_id, created_at FROM revocation_outbox WHERE key_id = ANY($1::text[])
"""
_CANDIDATES = "SELECT key_id, noted_at FROM late_key_candidates WHERE key_id = ANY($1::text[])"
_SWEEP = "SELECT horizon, r6_blocked_since, r6_waiting FROM late_key_sweep"
_RUNS = "SELECT run_id, mode, status, started_at FROM backfill_runs WHERE run_id = ANY($1::uuid[])"


async def member_of_key(conn: Connection, key_id: str) -> tuple[str, str] | None:
    table = key_table.current()
    if not all(table.fits(table.mapping.id_column, [key_id])):
        return None  # the id column cannot hold it: no such key
    row = await conn.fetchrow(_key_reads(table)[0], key_id)
    return (row["account_id"], row["iam_id"]) if row else None


def _dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    return [dict(row) for row in rows]


async def member_facts(
    conn: Connection, account_id: str, iam_id: str, key_id: str | None = None
) -> dict[str, Any]:
    """Everything `explain` shows about one member (and only `key_id` among its keys, if
    given), read in one snapshot so that the parts agree with each other."""
    table = key_table.current()
    _, member_keys, one_key = _key_reads(table)
    m = table.mapping
    fits = all(table.fits(m.account_column, [account_id]) + table.fits(m.user_column, [iam_id]))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        events = _dicts(await conn.fetch(_EVENTS, account_id, iam_id))
        baseline = await conn.fetchrow(_BASELINE, account_id, iam_id)
        membership = await conn.fetchrow(_MEMBERSHIP, account_id, iam_id)
        if key_id is not None:
            keys = _dicts(await conn.fetch(one_key, key_id))
        elif fits:
            keys = _dicts(await conn.fetch(member_keys, account_id, iam_id))
        else:  # a member the key columns cannot hold has no keys there
            keys = []
        ids = [key["id"] for key in keys]
        refs = {key["revoked_by"] for key in keys if key["revoked_by"]}
        return {
            "events": events,
            "baseline": dict(baseline) if baseline else None,
            "membership": dict(membership) if membership else None,
            "keys": keys,
            "revoking_events": await events_named(conn, refs),
            "outbox": {r["key_id"]: r["created_at"] for r in await conn.fetch(_OUTBOX, ids)},
            "candidates": {r["key_id"]: r["noted_at"] for r in await conn.fetch(_CANDIDATES, ids)},
            "sweep": dict(row) if (row := await conn.fetchrow(_SWEEP)) else None,
            "runs": await _runs(conn, refs),
        }


async def events_named(conn: Connection, refs: set[str]) -> dict[str, dict[str, Any]]:
    """The ledger's removals named by `revoked_by` references ('event:<source>#<id>')."""
    splits = [
        (ref, ref[len("event:") : at], ref[at + 1 :])
        for ref in refs
        if ref.startswith("event:")
        for at in range(len("event:"), len(ref))
        if ref[at] == "#"
    ]
    if not splits:
        return {}
    rows = await conn.fetch(
        _EVENTS_BY_IDENTITY, [s for _, s, _ in splits], [i for _, _, i in splits]
    )
    return {
        f"event:{r['source']}#{r['event_id']}": dict(r) for r in rows if r["change"] == "removed"
    }


async def _runs(conn: Connection, refs: set[str]) -> dict[str, dict[str, Any]]:
    ids = []
    for ref in refs:
        if ref.startswith("backfill:"):
            try:
                ids.append(UUID(ref.removeprefix("backfill:")))
            except ValueError:
                continue
    if not ids:
        return {}
    return {f"backfill:{r['run_id']}": dict(r) for r in await conn.fetch(_RUNS, ids)}
