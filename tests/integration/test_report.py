"""`cleanup-worker report`: its figures equal those computed here, in Python, from a known
random history written to the real database (and from one revocation by the real worker)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs; only validate() is used
import pytest

from cleanup_worker.settings import Settings
from testkit.database import seed_key
from testkit.events import event
from testkit.kafka import publisher
from testkit.operator import operator_login
from testkit.processes import cli, running_worker
from testkit.report_history import (
    DAYS,
    MEASURED,
    RULES,
    SLO_S,
    START,
    Revocation,
    write_history,
)
from tests.integration.test_late_keys import wait_revoked

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "report-schema.json").read_text())


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(p * len(ordered)) - 1, 0)]


async def write_invariant(db: Any) -> int:
    """Two live keys of removed members, one of an active member; returns the violations."""
    await db.execute(
        "INSERT INTO account_memberships VALUES ('acct', 'gone', 'removed', NULL, $1), "
        "('acct', 'here', 'active', $2, $2)",
        START,
        START - timedelta(days=9),
    )
    for iam_id in ("gone", "gone", "here"):
        await seed_key(db, "acct", iam_id, START - timedelta(days=1))
    return 2


def expected_block(revocations: list[Revocation], removals: int) -> dict[str, Any]:
    by_rule: dict[str, list[Revocation]] = defaultdict(list)
    for r in revocations:
        by_rule[r.rule].append(r)
    block: dict[str, Any] = {
        "removals_applied": removals,
        "keys_revoked": {rule: len(by_rule[rule]) for rule in RULES},
    }
    groups = {rule: by_rule[rule] for rule in MEASURED}
    groups["all"] = [r for r in revocations if r.rule in MEASURED]
    block["exposure"] = {}
    for name, members in groups.items():
        values = [r.exposure_s for r in members if r.exposure_s is not None]
        block["exposure"][name] = (
            {
                "measured": len(values),
                "p50_s": nearest_rank(values, 0.5),
                "p95_s": nearest_rank(values, 0.95),
                "p99_s": nearest_rank(values, 0.99),
                "max_s": max(values),
                "within_slo": sum(v <= SLO_S for v in values) / len(values),
            }
            if values
            else {"measured": 0, "p50_s": None, "max_s": None, "within_slo": None}
        )
    return block


def assert_block(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual["removals_applied"] == expected["removals_applied"]
    assert actual["keys_revoked"] == expected["keys_revoked"]
    for name, wanted in expected["exposure"].items():
        got = actual["exposure_all"] if name == "all" else actual["exposure"][name]
        for field, value in wanted.items():
            assert got[field] == pytest.approx(value, abs=1e-6), (name, field)


async def test_report_figures_equal_the_history(
    settings: Settings, db: Any, database_url: str
) -> None:
    seed = random.randrange(2**32)
    print(f"report history seed: {seed}")
    rng = random.Random(seed)
    revocations, applied = await write_history(db, rng)
    violations = await write_invariant(db)
    end = START + timedelta(days=DAYS)
    inside = [r for r in revocations if START <= r.revoked_at < end]
    period_args = ("--from", START.date().isoformat(), "--to", end.date().isoformat())
    async with operator_login(database_url) as operator:
        code, out, err = await cli(
            settings, "report", *period_args, "--slo", str(SLO_S), "--format", "json",
            CLEANUP_DATABASE_URL=operator,
        )  # fmt: skip
        assert code == 0, err
        report = json.loads(out)
        jsonschema.validate(report, SCHEMA, format_checker=jsonschema.FormatChecker())
        code, table, err = await cli(
            settings, "report", *period_args, "--slo", str(SLO_S), "--format", "csv",
            CLEANUP_DATABASE_URL=operator,
        )  # fmt: skip
        assert code == 0, err
    assert_block(report["overall"], expected_block(inside, sum(START <= a < end for a in applied)))
    assert [d["day"] for d in report["days"]] == [
        (START + timedelta(days=n)).date().isoformat() for n in range(DAYS)
    ]
    for n, day in enumerate(report["days"]):
        low, high = START + timedelta(days=n), START + timedelta(days=n + 1)
        that_day = [r for r in inside if low <= r.revoked_at < high]
        assert_block(day, expected_block(that_day, sum(low <= a < high for a in applied)))
    measured = sorted(
        (r for r in inside if r.exposure_s is not None),
        key=lambda r: (-(r.exposure_s or 0), str(r.key_id)),
    )
    assert [s["key_id"] for s in report["slowest"]] == [str(r.key_id) for r in measured[:20]]
    for slow in report["slowest"]:
        if slow["rule"] == "R1":
            split = slow["producer_delay_s"] + slow["worker_delay_s"]
            assert split == pytest.approx(slow["exposure_s"], abs=1e-6)
    assert report["invariant"]["live_keys_of_removed_members"] == violations
    rows = list(csv.DictReader(io.StringIO(table)))
    overall = {row["rule"]: row for row in rows if row["day"] == "all"}
    assert int(overall["R6"]["keys_revoked"]) == report["overall"]["keys_revoked"]["R6"]
    assert float(overall["all measured"]["p99_s"]) == pytest.approx(
        report["overall"]["exposure_all"]["p99_s"]
    )


async def test_report_counts_the_real_workers_revocation_as_r1(settings: Settings, db: Any) -> None:
    """End to end: a removal through Kafka, R1 by the worker; the report's exposure is the
    ledger's event time to the key's revocation, split at the record's Kafka timestamp."""
    key = await seed_key(db, "acct", "alice", datetime.now(UTC) - timedelta(days=1))
    removal = event("removed", "acct", "alice", datetime.now(UTC) - timedelta(seconds=2))
    async with publisher(settings) as pub, running_worker(settings):
        await pub.events([removal])
        await wait_revoked(db, key, timeout=30)
    row = await db.fetchrow(
        "SELECT k.revoked_at, e.event_time, e.kafka_timestamp, e.applied_at FROM api_keys AS k "
        "JOIN membership_events AS e ON e.event_id = $2 WHERE k.id = $1",
        key,
        removal.id,
    )
    today = datetime.now(UTC).date()
    code, out, err = await cli(
        settings, "report", "--from", today.isoformat(),
        "--to", (today + timedelta(days=1)).isoformat(), "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["overall"]["keys_revoked"]["R1"] == 1
    assert report["overall"]["removals_applied"] == 1
    [slow] = report["slowest"]
    assert slow["exposure_s"] == pytest.approx(
        (row["revoked_at"] - row["event_time"]).total_seconds(), abs=1e-6
    )
    assert slow["producer_delay_s"] == pytest.approx(
        (row["kafka_timestamp"] - row["event_time"]).total_seconds(), abs=1e-6
    )
    assert row["revoked_at"] == row["applied_at"]


async def test_report_refuses_a_bad_period(settings: Settings) -> None:
    code, _, err = await cli(settings, "report", "--from", "2026-03-02", "--to", "2026-03-01")
    assert code == 2
    assert "--to must be after --from" in err
    code, _, err = await cli(settings, "report", "--from", "last tuesday", "--to", "2026-03-01")
    assert code == 2
    assert "neither an RFC 3339 time nor a date" in err
