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

Percentiles are nearest-rank (percentile_disc): each one is an exposure some key really had.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cleanup_worker.adapters.postgres.connections import Connection

RULES = ("R1", "R1 re-check", "R6", "R5", "other")
MEASURED = ("R1", "R1 re-check", "R6")
_TABLE = "report_revocations"

# $1, $2: the period [from, to).
_COLLECT = f"""
CREATE TEMP TABLE {_TABLE} ON COMMIT DROP AS
SELECT k.id, k.account_id, k.iam_id, k.created_at, k.revoked_at, k.revoked_by,
       e.event_time, e.kafka_timestamp, e.applied_at, rule,
       extract(epoch FROM CASE rule
           WHEN 'R1' THEN k.revoked_at - e.event_time
           WHEN 'R1 re-check' THEN k.revoked_at - greatest(k.created_at, e.applied_at)
           WHEN 'R6' THEN k.revoked_at - k.created_at
       END)::float8 AS exposure_s,
       (k.revoked_at AT TIME ZONE 'UTC')::date AS day
FROM api_keys AS k
LEFT JOIN membership_events AS e
       ON k.revoked_by = 'event:' || e.source || '#' || e.event_id
      AND e.change = 'removed' AND e.applied_at < $2
CROSS JOIN LATERAL (SELECT CASE
    WHEN k.revoked_by LIKE 'backfill:%' THEN 'R5'
    WHEN e.event_id IS NULL THEN 'other'
    WHEN k.revocation_reason = 'orphaned' THEN 'R6'
    WHEN k.revoked_at = e.applied_at THEN 'R1'
    ELSE 'R1 re-check'
END AS rule) AS r
WHERE k.revoked_at >= $1 AND k.revoked_at < $2
"""

# $1: the SLO in seconds. One row per (day, rule), per rule, per day, and overall; a null
# rule is "every measured rule".
_STATS = f"""
SELECT day, rule, grouping(day) = 1 AS all_days, grouping(rule) = 1 AS all_rules,
       count(*) AS keys,
       count(exposure_s) AS measured,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY exposure_s) AS p50,
       percentile_disc(0.95) WITHIN GROUP (ORDER BY exposure_s) AS p95,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY exposure_s) AS p99,
       max(exposure_s) AS max,
       count(*) FILTER (WHERE exposure_s <= $1) AS within_slo
FROM {_TABLE}
GROUP BY GROUPING SETS ((day, rule), (rule), (day), ())
"""

_SLOWEST = f"""
SELECT id, account_id, iam_id, rule, created_at, event_time, kafka_timestamp, applied_at,
       revoked_at, revoked_by, exposure_s
FROM {_TABLE}
WHERE exposure_s IS NOT NULL
ORDER BY exposure_s DESC, id
LIMIT $1
"""

_REMOVALS = """
SELECT (applied_at AT TIME ZONE 'UTC')::date AS day, count(*) AS removals
FROM membership_events
WHERE change = 'removed' AND applied_at >= $1 AND applied_at < $2
GROUP BY 1
"""


async def revocation_figures(
    conn: Connection, start: datetime, end: datetime, slo_s: float, slowest: int
) -> dict[str, Any]:
    """The period's statistics, slowest revocations and removals, from one snapshot."""
    async with conn.transaction(isolation="repeatable_read"):
        # One pass over the period's revocations and the ledger's removals: no statement
        # timeout, and memory enough to hash the removals without spilling.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SET LOCAL work_mem = '256MB'")
        await conn.execute(_COLLECT, start, end)
        stats = [dict(r) for r in await conn.fetch(_STATS, slo_s)]
        slow = [dict(r) for r in await conn.fetch(_SLOWEST, slowest)]
        removals = {r["day"]: r["removals"] for r in await conn.fetch(_REMOVALS, start, end)}
    return {"stats": stats, "slowest": slow, "removals": removals}
