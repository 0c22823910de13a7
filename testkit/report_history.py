"""A known random history of removals and revocations by every rule, written straight into
the ledger and api_keys: what `report` is checked against (tests/integration/test_report.py)
and what the example report in docs/ shows (bench/report_example.py)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 3
SLO_S = 30.0
MEASURED = ("R1", "R1 re-check", "R6")
RULES = (*MEASURED, "R5", "other")


@dataclass
class Revocation:
    key_id: uuid.UUID
    rule: str
    revoked_at: datetime
    exposure_s: float | None


def seconds(rng: random.Random, low: float, high: float) -> timedelta:
    return timedelta(microseconds=rng.randint(int(low * 1e6), int(high * 1e6)))


async def write_history(db: Any, rng: random.Random) -> tuple[list[Revocation], list[datetime]]:
    """Removals over the period (and some just outside it), each member's keys revoked by a
    random rule with random delays; returns what was revoked and the removals' apply times."""
    revocations: list[Revocation] = []
    applied_times: list[datetime] = []
    ledger, keys = [], []
    for n in range(160):
        member = ("acct", f"user-{n}")
        event_time = START - timedelta(hours=6) + seconds(rng, 0, (DAYS + 0.5) * 86_400)
        kafka_ts = event_time + seconds(rng, 0, 4)
        # One slow producer in ten, one slow worker in ten.
        if rng.random() < 0.1:
            kafka_ts += seconds(rng, 30, 300)
        applied = (
            kafka_ts
            + seconds(rng, 0.001, 2)
            + (seconds(rng, 10, 90) if n % 10 == 3 else timedelta())
        )
        event_id = uuid.uuid4().hex
        ledger.append((*member, event_id, event_time, kafka_ts, applied))
        applied_times.append(applied)
        ref = f"event:/accounts#{event_id}"
        for _ in range(rng.randint(1, 3)):
            rule = rng.choice(RULES)
            key_id = uuid.uuid4()
            reason, by = "member_removed", ref
            if rule == "R1":
                created, revoked = event_time - seconds(rng, 60, 86_400), applied
                exposure: float | None = (revoked - event_time).total_seconds()
            elif rule == "R1 re-check":
                created = event_time - seconds(rng, 0, 5)
                revoked = applied + seconds(rng, 0.05, 3)
                exposure = (revoked - max(created, applied)).total_seconds()
            elif rule == "R6":
                created = applied + seconds(rng, 1, 60)
                revoked = created + seconds(rng, 30, 45)
                reason, exposure = "orphaned", (revoked - created).total_seconds()
            elif rule == "R5":
                created, revoked = event_time - seconds(rng, 60, 600), applied + seconds(rng, 1, 9)
                reason, by, exposure = "orphaned", f"backfill:{uuid.uuid4()}", None
            else:
                created, revoked = event_time - seconds(rng, 60, 600), applied + seconds(rng, 1, 9)
                by, exposure = "support-desk:ticket-42", None
            keys.append((key_id, *member, created, revoked, reason, by))
            revocations.append(Revocation(key_id, rule, revoked, exposure))
    await db.executemany(
        "INSERT INTO membership_events (source, event_id, account_id, iam_id, change, "
        "event_time, event_type, kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, "
        "applied_at) VALUES ('/accounts', $3, $1, $2, 'removed', $4, 'account.member.removed', "
        "'account-membership', 0, 1, $5, $6)",
        ledger,
    )
    await db.executemany(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at, revoked_at, "
        "revocation_reason, revoked_by) VALUES ($1, $2, $3, 'h', $4, $5, $6, $7)",
        keys,
    )
    return revocations, applied_times
