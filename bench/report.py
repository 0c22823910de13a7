"""`report` and `explain` over a year-sized history, in one run against the dev PostgreSQL.

    .venv/bin/python -m bench.report [--members 5000000] [--keep NAME]

Builds, set-based (generate_series) in a scratch database, a year of history: per member one
`added` and one `removed` (10 M ledger rows for 5 M members), four keys each (20 M keys).
Half the members end removed: three keys revoked by R1 and a fourth by R1, the R1 re-check,
R6 or the backfill (R5); the other half were re-added a day after their removal: two keys
revoked by R1, two live keys created after the re-add. Then it times, as real processes:

1. `cleanup-worker report` over the whole year (JSON), with and without the invariant, and
   over one quarter;
2. the invariant's assessment alone (what the worker's watch costs: docs/operations.md);
3. `explain` in-process (the answer's own latency: connect excluded, as a long-lived session
   would see it) for 50 random members and 50 random keys, and one CLI run (process start
   included).
Targets: report <= 60 s, explain <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cleanup_worker.adapters.postgres import backfill_assessment
from cleanup_worker.adapters.postgres.keys import MembershipSource
from cleanup_worker.adapters.postgres.migrator import migrate
from cleanup_worker.service.explain import explain_key, explain_member
from testkit.services import scratch_database, service_env

YEAR = "timestamptz '2026-01-01'"
# $1 members. Member i's removal at a point of the year, spread evenly; the record reaches
# Kafka within a second and is applied 20-150 ms later.
_EVENTS = f"""
INSERT INTO membership_events (source, event_id, account_id, iam_id, change, event_time,
    event_type, kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, applied_at)
SELECT '/accounts', e.kind || '-' || i, 'acct-' || (i % 50000), 'user-' || i, e.change,
       e.at, 'account.member.' || e.change, 'account-membership', i % 6, i / 6,
       e.at + (i % 7) * interval '100 ms' + interval '5 ms',
       e.at + (i % 7) * interval '100 ms' + interval '25 ms' + (i % 13) * interval '10 ms'
FROM generate_series(0, $1 - 1) AS i
CROSS JOIN LATERAL (SELECT {YEAR} + i * (interval '1 year' / $1) AS removed_at) AS t
CROSS JOIN LATERAL (VALUES
    ('r', 'removed', t.removed_at),
    ('a', 'added', CASE WHEN i % 2 = 0 THEN t.removed_at - interval '30 days'
                        ELSE t.removed_at + interval '1 day' END)) AS e(kind, change, at)
"""
_MEMBERSHIPS = f"""
INSERT INTO account_memberships (account_id, iam_id, state, member_since, changed_at)
SELECT 'acct-' || (i % 50000), 'user-' || i,
       CASE WHEN i % 2 = 0 THEN 'removed' ELSE 'active' END,
       CASE WHEN i % 2 = 0 THEN NULL ELSE t.removed_at + interval '1 day' END,
       CASE WHEN i % 2 = 0 THEN t.removed_at ELSE t.removed_at + interval '1 day' END
FROM generate_series(0, $1 - 1) AS i
CROSS JOIN LATERAL (SELECT {YEAR} + i * (interval '1 year' / $1) AS removed_at) AS t
"""
# applied = the removal's applied_at (as in _EVENTS). Fourth key of a removed member: by i % 10,
# 0 R6, 2 the re-check, 4 the backfill, otherwise R1; a re-added member's last two are live.
_KEYS = f"""
INSERT INTO api_keys (id, account_id, iam_id, name, key_hash, created_at, revoked_at,
                      revocation_reason, revoked_by)
SELECT gen_random_uuid(), 'acct-' || (i % 50000), 'user-' || i, 'key ' || k,
       'sha256:' || md5(i::text || k),
       CASE kind WHEN 'live' THEN removed_at + interval '2 days'
                 WHEN 'R6' THEN applied + interval '5 s'
                 WHEN 'recheck' THEN removed_at - interval '1 s'
                 WHEN 'R5' THEN removed_at - interval '40 days'
                 ELSE removed_at - (k + 1) * interval '10 days' END,
       CASE kind WHEN 'live' THEN NULL
                 WHEN 'R6' THEN applied + interval '36 s'
                 WHEN 'recheck' THEN applied + interval '1.5 s'
                 WHEN 'R5' THEN applied + interval '1 day'
                 ELSE applied END,
       CASE kind WHEN 'live' THEN NULL WHEN 'R6' THEN 'orphaned' WHEN 'R5' THEN 'orphaned'
                 ELSE 'member_removed' END,
       CASE kind WHEN 'live' THEN NULL
                 WHEN 'R5' THEN 'backfill:00000000-0000-4000-8000-000000000001'
                 ELSE 'event:/accounts#r-' || i END
FROM (
    SELECT i, k, t.removed_at,
           t.removed_at + (i % 7) * interval '100 ms' + interval '25 ms'
               + (i % 13) * interval '10 ms' AS applied,
           CASE WHEN i % 2 = 1 AND k >= 2 THEN 'live'
                WHEN i % 2 = 0 AND k = 3 AND i % 10 = 0 THEN 'R6'
                WHEN i % 2 = 0 AND k = 3 AND i % 10 = 2 THEN 'recheck'
                WHEN i % 2 = 0 AND k = 3 AND i % 10 = 4 THEN 'R5'
                ELSE 'R1' END AS kind
    FROM generate_series(0, $1 - 1) AS i
    CROSS JOIN generate_series(0, 3) AS k
    CROSS JOIN LATERAL (SELECT {YEAR} + i * (interval '1 year' / $1) AS removed_at) AS t
) AS keys
"""
_SECONDARY_INDEXES = """
SELECT indexname, indexdef FROM pg_indexes
WHERE tablename IN ('api_keys', 'membership_events', 'account_memberships')
  AND indexname NOT LIKE '%pkey'
"""


async def build(url: str, members: int) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    took: dict[str, float] = {}
    try:
        await conn.execute("SET synchronous_commit = off")
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute("SET statement_timeout = 0")
        indexes = await conn.fetch(_SECONDARY_INDEXES)
        for row in indexes:
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        for name, sql in (("ledger", _EVENTS), ("memberships", _MEMBERSHIPS), ("keys", _KEYS)):
            started = time.monotonic()
            await conn.execute(sql, members)
            took[f"load {name} s"] = round(time.monotonic() - started, 1)
            print(f"  loaded {name} in {took[f'load {name} s']} s", file=sys.stderr)
        started = time.monotonic()
        for row in indexes:
            await conn.execute(row["indexdef"])
        await conn.execute("VACUUM ANALYZE api_keys, membership_events, account_memberships")
        took["indexes and analyze s"] = round(time.monotonic() - started, 1)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM membership_events) AS ledger, "
            "(SELECT count(*) FROM api_keys) AS keys"
        )
        assert counts is not None  # aggregates without GROUP BY return one row
        took["ledger rows"], took["keys"] = counts["ledger"], counts["keys"]
    finally:
        await conn.close()
    return took


async def timed_cli(url: str, *args: str) -> tuple[float, str]:
    env = {**os.environ, "CLEANUP_DATABASE_URL": url, "CLEANUP_LOG_FORMAT": "json"}
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cleanup_worker", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {err.decode()[-2000:]}")
    return elapsed, out.decode()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(p * len(ordered)), len(ordered) - 1)]


async def explain_latencies(url: str, members: int, rng: random.Random) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        member_ms, key_ms = [], []
        for _ in range(50):
            i = rng.randrange(members)
            started = time.perf_counter()
            answer = await explain_member(conn, f"acct-{i % 50000}", f"user-{i}", notices_on=False)
            member_ms.append((time.perf_counter() - started) * 1000)
            key_id = answer.keys[rng.randrange(len(answer.keys))].key_id
            started = time.perf_counter()
            await explain_key(conn, key_id, notices_on=False)
            key_ms.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return {
        "explain --member p50 ms": round(statistics.median(member_ms), 1),
        "explain --member p95 ms": round(percentile(member_ms, 0.95), 1),
        "explain --member max ms": round(max(member_ms), 1),
        "explain --key p50 ms": round(statistics.median(key_ms), 1),
        "explain --key p95 ms": round(percentile(key_ms, 0.95), 1),
        "explain --key max ms": round(max(key_ms), 1),
    }


async def assessment_s(url: str) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        await backfill_assessment.assess(conn, MembershipSource.TABLE, top=0)
        return round(time.monotonic() - started, 1)
    finally:
        await conn.close()


@asynccontextmanager
async def _database(admin_url: str, keep: str | None) -> AsyncIterator[tuple[str, bool]]:
    """A scratch database, or the kept one named `keep` (True: it is already built)."""
    if keep is None:
        async with scratch_database(admin_url, "bench_report") as url:
            yield url, False
        return
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{keep}"))
    admin = await asyncpg.connect(admin_url)
    try:
        exists = await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", keep)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{keep}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(url)
    try:
        built = bool(await conn.fetchval("SELECT to_regclass('api_keys') IS NOT NULL"))
        if not built:
            await migrate(conn)
    finally:
        await conn.close()
    yield url, built


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--keep", metavar="NAME", help="build into database NAME and keep it (or reuse it)"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"seed {seed}", file=sys.stderr)
    admin = service_env()["CLEANUP_DATABASE_URL"]
    figures: dict[str, Any] = {"members": args.members, "seed": seed}
    async with _database(admin, args.keep) as (url, built):
        if not built:
            figures.update(await build(url, args.members))
        year = ("--from", "2026-01-01", "--to", "2027-01-01", "--format", "json")
        took, out = await timed_cli(url, "report", *year)
        figures["report year s"] = round(took, 1)
        report = json.loads(out)
        figures["report year keys revoked by rule"] = report["overall"]["keys_revoked"]
        figures["report year exposure (all measured)"] = report["overall"]["exposure_all"]
        figures["report year live keys of removed members"] = report["invariant"][
            "live_keys_of_removed_members"
        ]
        took, _ = await timed_cli(url, "report", *year, "--no-invariant")
        figures["report year without invariant s"] = round(took, 1)
        quarter = ("--from", "2026-04-01", "--to", "2026-07-01", "--format", "html")
        took, _ = await timed_cli(url, "report", *quarter, "--no-invariant")
        figures["report quarter html without invariant s"] = round(took, 1)
        figures["invariant assessment s"] = await assessment_s(url)
        figures.update(await explain_latencies(url, args.members, random.Random(seed)))
        took, _ = await timed_cli(url, "explain", "--member", "acct-7/user-7")
        figures["explain CLI wall s (process start included)"] = round(took, 2)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
