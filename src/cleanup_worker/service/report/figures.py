"""`cleanup-worker report`: revocation timeliness over a period, as one JSON-ready document
(its schema: docs/report-schema.json), rendered as JSON, CSV or HTML by the sibling modules.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from cleanup_worker.adapters.postgres import backfill_assessment
from cleanup_worker.adapters.postgres import report as sql
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from cleanup_worker.domain.rules import OrphanReason
from cleanup_worker.errors import WindowError

SCHEMA_ID = "https://cleanup-worker.example/report-schema.json"
SLOWEST = 20
ALL = "all measured rules"


def parse_when(text: str, *, name: str) -> datetime:
    """An RFC 3339 time, or a date (its midnight UTC); a time without offset is UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(f"{name}: {text!r} is neither an RFC 3339 time nor a date") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _stats(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None or row["measured"] == 0:
        return {
            "keys": row["keys"] if row else 0,
            "measured": 0,
            "p50_s": None,
            "p95_s": None,
            "p99_s": None,
            "max_s": None,
            "within_slo": None,
        }
    return {
        "keys": row["keys"],
        "measured": row["measured"],
        "p50_s": row["p50"],
        "p95_s": row["p95"],
        "p99_s": row["p99"],
        "max_s": row["max"],
        "within_slo": row["within_slo"] / row["measured"],
    }


def _block(rows: dict[str | None, dict[str, Any]], removals: int) -> dict[str, Any]:
    """One day's (or the whole period's) figures from its rows by rule (None: every rule)."""
    revoked = {rule: rows[rule]["keys"] if rule in rows else 0 for rule in sql.RULES}
    return {
        "removals_applied": removals,
        "keys_revoked": revoked,
        "exposure": {rule: _stats(rows.get(rule)) for rule in sql.MEASURED},
        # The rule-less grouping: its percentiles skip R5's and other's null exposures.
        "exposure_all": _stats(rows.get(None)),
    }


def _days(start: datetime, end: datetime) -> list[date]:
    first, last = start.astimezone(UTC).date(), (end - timedelta(microseconds=1)).astimezone(UTC)
    return [first + timedelta(days=n) for n in range((last.date() - first).days + 1)]


async def build_report(
    conn: Connection, start: datetime, end: datetime, slo_s: float, *, assess: bool = True
) -> dict[str, Any]:
    """The report document. `assess=False` leaves out the invariant (one pass over every key)."""
    if end <= start:
        raise WindowError("--to must be after --from")
    raw = await sql.revocation_figures(conn, start, end, slo_s, SLOWEST)
    by_day: dict[date | None, dict[str | None, dict[str, Any]]] = {}
    for row in raw["stats"]:
        day = None if row["all_days"] else row["day"]
        rule = None if row["all_rules"] else row["rule"]
        by_day.setdefault(day, {})[rule] = row
    overall = _block(by_day.get(None, {}), sum(raw["removals"].values()))
    days = [
        {"day": day.isoformat(), **_block(by_day.get(day, {}), raw["removals"].get(day, 0))}
        for day in _days(start, end)
    ]
    document: dict[str, Any] = {
        "$schema": SCHEMA_ID,
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "slo_s": slo_s,
        "generated_at": datetime.now(UTC).isoformat(),
        "overall": overall,
        "days": days,
        "slowest": [_slow(row) for row in raw["slowest"]],
        "invariant": await invariant(conn) if assess else None,
    }
    return document


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    return (later - earlier).total_seconds() if later and earlier else None


def _slow(row: dict[str, Any]) -> dict[str, Any]:
    r1 = row["rule"] == "R1"
    return {
        "key_id": str(row["id"]),
        "member": f"{row['account_id']}/{row['iam_id']}",
        "rule": row["rule"],
        "exposure_s": row["exposure_s"],
        "created_at": row["created_at"].isoformat(),
        "event_time": row["event_time"].isoformat() if row["event_time"] else None,
        "kafka_timestamp": row["kafka_timestamp"].isoformat() if row["kafka_timestamp"] else None,
        "applied_at": row["applied_at"].isoformat() if row["applied_at"] else None,
        "revoked_at": row["revoked_at"].isoformat(),
        "revoked_by": row["revoked_by"],
        # Where R1's time went; the re-check and R6 wait for the key itself (its commit, the
        # sweep, R6's settle delay), not for the event.
        "producer_delay_s": _seconds(row["kafka_timestamp"], row["event_time"]) if r1 else None,
        "worker_delay_s": _seconds(row["applied_at"], row["kafka_timestamp"]) if r1 else None,
    }


async def invariant(conn: Connection) -> dict[str, Any]:
    """Live keys of removed members now: the backfill's read-only assessment (R5)."""
    found = await backfill_assessment.assess(conn, MembershipSource.TABLE, top=0)
    await conn.execute("DROP TABLE IF EXISTS pg_temp.backfill_candidates")
    return {
        "assessed_at": datetime.now(UTC).isoformat(),
        "keys_scanned": found.keys_scanned,
        "live_keys_of_removed_members": found.by_reason.get(OrphanReason.MEMBERSHIP_REMOVED, 0),
        "live_keys_before_member_since": found.by_reason.get(
            OrphanReason.CREATED_BEFORE_MEMBER_SINCE, 0
        ),
        "live_keys_without_membership": found.by_reason.get(OrphanReason.NO_MEMBERSHIP, 0),
    }
