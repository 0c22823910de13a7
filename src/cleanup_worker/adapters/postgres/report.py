"""The SQL behind `cleanup-worker report`: every revocation of a period with the rule that made
it and its exposure, aggregated in the database (docs/operations.md, "Report").

Which rule revoked a key is read from what the revocation left: `revoked_by` names a backfill
run (R5) or a removal in the ledger; a removal's own transaction wrote both its ledger row
and R1's revocations, so `revoked_at = applied_at` there (both are that transaction's
`now()`), while the re-check revokes later with the same reference; `orphaned` with an event
reference is R6. Exposure, per rule:

    R1           the removal's event time -> revoked_at
    R1 re-check  the later of the key's creation and the removal's application -> revoked_at
                 (the key committed after the removal was applied, or R1 would have revoked
                 it: this is an upper bound of commit -> revoked)
    R6           the key's creation -> revoked_at
    R5, other    counted, not measured (no event asked for them)

Percentiles are nearest-rank (as percentile_disc): each one is an exposure some key really had.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.explain import events_named
from cleanup_worker.adapters.postgres.key_statements import fill, key_texts
from cleanup_worker.adapters.postgres.key_table import AUDIT_TABLE, KeyTable

RULES = ("R1", "R1 re-check", "R6", "R5", "other")
MEASURED = ("R1", "R1 re-check", "R6")
_TABLE = "report_revocations"
_WEIGHTS = "report_exposures"

# $1, $2: the period [from, to). One narrow row per revoked key: what the statistics and the
# slowest list need; the slowest keys' other columns are read back by id. The revocations come
# from the key table, or, where it records none, from key_revocations (docs/key-table.md).
_COLLECT = f"""
CREATE TEMP TABLE {_TABLE} ON COMMIT DROP AS
SELECT {{id_text}} AS id, r.rule, ({{revoked_at}} AT TIME ZONE 'UTC')::date AS day,
       extract(epoch FROM CASE r.rule
           WHEN 'R1' THEN {{revoked_at}} - e.event_time
           WHEN 'R1 re-check' THEN {{revoked_at}} - greatest({{created_tz}}, e.applied_at)
           WHEN 'R6' THEN {{revoked_at}} - {{created_tz}}
       END)::float8 AS exposure_s
FROM {{source}}
LEFT JOIN membership_events AS e
       ON {{revoked_by}} = 'event:' || e.source || '#' || e.event_id
      AND e.change = 'removed' AND e.applied_at < $2
CROSS JOIN LATERAL (SELECT CASE
    WHEN {{revoked_by}} LIKE 'backfill:%' THEN 'R5'
    WHEN e.event_id IS NULL THEN 'other'
    WHEN {{reason}} = 'orphaned' THEN 'R6'
    WHEN {{revoked_at}} = e.applied_at THEN 'R1'
    ELSE 'R1 re-check'
END AS rule) AS r
WHERE {{revoked_at}} >= $1 AND {{revoked_at}} < $2
"""


# The keys of one removal that R1 revoked share one exposure: the statistics read each
# (day, rule, exposure) once, with its number of keys, instead of every key. $1: the SLO.
_WEIGH = f"""
CREATE TEMP TABLE {_WEIGHTS} ON COMMIT DROP AS
SELECT day, rule, exposure_s, count(*) AS n
FROM {_TABLE}
GROUP BY day, rule, exposure_s
"""

_COUNTS = f"""
SELECT day, rule, sum(n)::bigint AS keys FROM {_WEIGHTS} GROUP BY day, rule
"""

# Nearest-rank percentiles over weighted values: the smallest exposure whose cumulative
# count reaches p of the total, as percentile_disc would find among the keys themselves.
# {{keys}}: the grouping columns (none for the whole period); only the measured rules.
_PERCENTILES = f"""
SELECT {{select}}
       sum(n)::bigint AS measured,
       min(exposure_s) FILTER (WHERE cum >= 0.5 * total) AS p50,
       min(exposure_s) FILTER (WHERE cum >= 0.95 * total) AS p95,
       min(exposure_s) FILTER (WHERE cum >= 0.99 * total) AS p99,
       max(exposure_s) AS max,
       coalesce(sum(n) FILTER (WHERE exposure_s <= $1), 0)::bigint AS within_slo
FROM (
    SELECT {{select}} exposure_s, n,
           sum(n) OVER (PARTITION BY {{partition}} ORDER BY exposure_s) AS cum,
           sum(n) OVER (PARTITION BY {{partition}}) AS total
    FROM (SELECT {{select}} exposure_s, sum(n) AS n
          FROM {_WEIGHTS} WHERE exposure_s IS NOT NULL
          GROUP BY {{group}} exposure_s) AS values
) AS ranked
{{group_by}}
"""


def _percentiles(columns: tuple[str, ...]) -> str:
    select = "".join(f"{c}, " for c in columns)
    return _PERCENTILES.format(
        select=select,
        partition=", ".join(columns) or "true",
        group=select,
        group_by=f"GROUP BY {', '.join(columns)}" if columns else "",
    )


_SLOWEST = f"""
SELECT t.id, {{account_text}} AS account_id, {{user_text}} AS iam_id, t.rule,
       {{created_tz}} AS created_at, {{revoked_at}} AS revoked_at, {{revoked_by}} AS revoked_by,
       t.exposure_s
FROM (SELECT id, rule, exposure_s FROM {_TABLE} WHERE exposure_s IS NOT NULL
      ORDER BY exposure_s DESC, id LIMIT $1) AS t
JOIN {{keys}} AS k ON {{id}} = {{t_id}}
{{audit_join}}
ORDER BY t.exposure_s DESC, t.id
"""


@cache
def _key_statements(table: KeyTable) -> tuple[str, str]:
    """The collection and the slowest list, for `table`."""
    m = table.mapping
    parts = {
        **key_texts(table),
        "keys": table.name,
        "id": table.id(),
        "revoked_at": table.revoked_at(),
        "reason": table.reason(),
        "revoked_by": table.revoked_by(),
    }
    source = f"{table.name} AS k"
    if table.audited_apart:
        # From our record of the period's revocations (its index on revoked_at), to the keys.
        source = f"{AUDIT_TABLE} AS a JOIN {source} ON {table.id()} = "
        source += table.typed_stored("a.key_id", m.id_column)
    collect = fill(_COLLECT, **parts, source=source)
    slowest = fill(
        _SLOWEST,
        **parts,
        t_id=table.typed_stored("t.id", m.id_column),
        audit_join=table.audit_join(),
    )
    return collect, slowest


_REMOVALS = """
SELECT (applied_at AT TIME ZONE 'UTC')::date AS day, count(*) AS removals
FROM membership_events
WHERE change = 'removed' AND applied_at >= $1 AND applied_at < $2
GROUP BY 1
"""

# The grouping columns of each level of the statistics: the levels without `rule` combine
# the measured rules.
_LEVELS: tuple[tuple[str, ...], ...] = (("day", "rule"), ("rule",), ("day",), ())


def _stats_rows(
    counts: list[Any], levels: dict[tuple[str, ...], list[Any]]
) -> list[dict[str, Any]]:
    """One row per (day, rule), rule, day and the period, in the shape `figures` reads."""
    keys: dict[tuple[Any, Any], int] = {}
    for row in counts:
        for day in (row["day"], None):
            for rule in (row["rule"], None):
                keys[(day, rule)] = keys.get((day, rule), 0) + row["keys"]
    rows = {}
    for columns, found in levels.items():
        for row in found:
            day = row["day"] if "day" in columns else None
            rule = row["rule"] if "rule" in columns else None
            rows[(day, rule)] = dict(row)
    out = []
    for (day, rule), total in keys.items():
        stats = rows.get((day, rule), {"measured": 0})
        out.append(
            {
                "day": day,
                "rule": rule,
                "all_days": day is None,
                "all_rules": rule is None,
                "keys": total,
                "measured": stats["measured"],
                "p50": stats.get("p50"),
                "p95": stats.get("p95"),
                "p99": stats.get("p99"),
                "max": stats.get("max"),
                "within_slo": stats.get("within_slo", 0),
            }
        )
    return out


async def revocation_figures(
    conn: Connection, start: datetime, end: datetime, slo_s: float, slowest: int
) -> dict[str, Any]:
    """The period's statistics, slowest revocations and removals, from one snapshot."""
    async with conn.transaction(isolation="repeatable_read"):
        # One pass over the period's revocations and the ledger's removals: no statement
        # timeout, and memory enough to hash the removals and sort the exposures in memory.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SET LOCAL work_mem = '512MB'")
        # The join on the reference is an expression the planner cannot estimate: it prices a
        # hash join at billions and picks a merge join that sorts every key of the period on
        # disk (55 s for a year of 15 M revocations), where the parallel hash join of the
        # ledger's removals takes 35 s (docs/performance.md, "Report and explain").
        await conn.execute("SET LOCAL enable_mergejoin = off")
        collect, slowest_sql = _key_statements(key_table.current())
        await conn.execute(collect, start, end)
        await conn.execute(_WEIGH)
        counts = await conn.fetch(_COUNTS)
        levels = {columns: await conn.fetch(_percentiles(columns), slo_s) for columns in _LEVELS}
        slow = [dict(r) for r in await conn.fetch(slowest_sql, slowest)]
        # Their removals by primary key (a join on the reference would read the ledger).
        named = await events_named(conn, {row["revoked_by"] for row in slow})
        for row in slow:
            event = named.get(row["revoked_by"], {})
            for column in ("event_time", "kafka_timestamp", "applied_at"):
                row[column] = event.get(column)
        removals = {r["day"]: r["removals"] for r in await conn.fetch(_REMOVALS, start, end)}
    return {"stats": _stats_rows(counts, levels), "slowest": slow, "removals": removals}
