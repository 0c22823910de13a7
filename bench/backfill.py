"""Backfill benchmark ("Targets", docs/design.md), in one run against the dev PostgreSQL.

    .venv/bin/python -m bench.backfill [--keys 1000000] [--also 4000000] [--trials 3]

For each size, in a scratch database: seed the keys (10 % orphaned, a third in each R5 case:
no membership row, membership removed, created before member_since; about 1 % already
revoked by the worker), then, per trial, on the same data restored in between:

1. PostgreSQL alone: the same revocations as one set-based UPDATE (the ceiling);
2. `cleanup-worker backfill --execute --json` as a real process: its duration, its longest
   transaction (from its summary), and its peak resident memory (sampled with psutil).

Trials alternate which of the two goes first; the figures are medians. The extra sizes of
--also run one trial each (they are there to show that memory stays flat).
Targets: backfill rate >= 80 % of the set-based UPDATE's, no transaction > 250 ms, memory
flat as the table grows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psutil

from testkit.services import scratch_database, service_env

KEYS_PER_USER = 5
RATE_TARGET = 0.8
TRANSACTION_TARGET_MS = 250.0
FLAT_TOLERANCE = 1.10  # peak RSS may grow by at most 10 % from the smallest to the largest size

# User u: u % 30 == 0 no membership row, == 1 removed, == 2 active since after all its keys
# (so 3 in 30 users, 10 % of the keys, are orphaned); the rest are members that keep their
# keys, some "since always" (null member_since). Every 97th key is already revoked.
_SEED_MEMBERSHIPS = """
INSERT INTO account_memberships (account_id, iam_id, state, member_since, changed_at)
SELECT 'acct-' || (u % 1000), 'user-' || u,
       CASE WHEN u % 30 = 1 THEN 'removed' ELSE 'active' END,
       CASE WHEN u % 30 = 1 THEN NULL
            WHEN u % 30 = 2 THEN timestamptz '2030-01-01'
            WHEN u % 7 = 0 THEN NULL
            ELSE timestamptz '2020-01-01' END,
       timestamptz '2024-01-01'
FROM generate_series(0, $1 - 1) AS u
WHERE u % 30 <> 0
"""
_SEED_KEYS = """
INSERT INTO api_keys (id, account_id, iam_id, name, key_hash, created_at,
                      revoked_at, revocation_reason, revoked_by)
SELECT gen_random_uuid(), 'acct-' || (i / $2 % 1000), 'user-' || (i / $2), 'key ' || i,
       'sha256:' || md5(i::text), timestamptz '2024-01-01' + i * interval '1 second',
       CASE WHEN i % 97 = 0 THEN timestamptz '2025-01-01' END,
       CASE WHEN i % 97 = 0 THEN 'member_removed' END,
       CASE WHEN i % 97 = 0 THEN 'event:/bench#' || i END
FROM generate_series(0, $1 - 1) AS i
"""
# R5, written independently of the product's SQL: not revoked, and no active membership
# that covers the key's creation.
_SET_BASED = """
UPDATE api_keys AS k
SET revoked_at = now(), revocation_reason = 'orphaned', revoked_by = 'set-based'
WHERE k.revoked_at IS NULL
  AND NOT EXISTS (
      SELECT 1 FROM account_memberships AS m
      WHERE m.account_id = k.account_id AND m.iam_id = k.iam_id AND m.state = 'active'
        AND (m.member_since IS NULL OR k.created_at >= m.member_since))
"""
# Un-revoking is what R4's trigger (migration 0007) refuses; the benchmark owns its scratch
# database and takes the documented way around it, in one transaction.
_RESTORE = """
BEGIN;
ALTER TABLE api_keys DISABLE TRIGGER api_keys_revocation_is_permanent;
UPDATE api_keys SET revoked_at = NULL, revocation_reason = NULL, revoked_by = NULL
WHERE revocation_reason = 'orphaned';
ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_revocation_is_permanent;
COMMIT;
"""


@dataclass
class Trial:
    keys: int
    revoked_set_based: int
    set_based_s: float
    revoked_backfill: int
    backfill_s: float  # the run's own duration, from its summary
    assessment_s: float
    process_s: float  # the process, start to exit (interpreter start-up included)
    longest_transaction_ms: float
    batches: int
    peak_rss: int

    @property
    def ratio(self) -> float:
        return self.set_based_s / self.backfill_s


async def seed(url: str, keys: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        await conn.execute(_SEED_MEMBERSHIPS, keys // KEYS_PER_USER)
        await conn.execute(_SEED_KEYS, keys, KEYS_PER_USER)
        await conn.execute("VACUUM ANALYZE")
        print(f"  seeded {keys:,} keys in {time.monotonic() - started:.1f} s", flush=True)
    finally:
        await conn.close()


async def settle(conn: Any) -> None:
    """The same starting point for every measurement: orphans live, no dead rows, clean pages."""
    await conn.execute(_RESTORE)
    await conn.execute("TRUNCATE revocation_outbox, revocation_outbox_batches")
    await conn.execute("VACUUM ANALYZE api_keys")
    await conn.execute("CHECKPOINT")


async def set_based(url: str) -> tuple[int, float]:
    conn = await asyncpg.connect(url)
    try:
        await settle(conn)
        started = time.perf_counter()
        status = await conn.execute(_SET_BASED)
        return int(status.split()[-1]), time.perf_counter() - started
    finally:
        await conn.close()


NOTICES: dict[str, str] = {}  # --notices: CLEANUP_REVOCATIONS_TOPIC for the backfill
# More arguments for `cleanup-worker backfill` (--lanes).
EXTRA_ARGS: list[str] = []


async def run_backfill(url: str, batch_size: int | None) -> tuple[dict[str, Any], float, int]:
    conn = await asyncpg.connect(url)
    try:
        await settle(conn)
    finally:
        await conn.close()
    env = {**os.environ, "CLEANUP_DATABASE_URL": url, "CLEANUP_LOG_FORMAT": "json", **NOTICES}
    args = ["--execute", "--json", "--max-fraction", "0.2"]
    if batch_size:
        args += ["--batch-size", str(batch_size)]
    args += EXTRA_ARGS
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cleanup_worker", "backfill", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    peak = 0

    async def sample() -> None:
        nonlocal peak
        watched = psutil.Process(process.pid)
        while process.returncode is None:
            try:
                peak = max(peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    stdout, stderr = await process.communicate()
    elapsed = time.perf_counter() - started
    await sampler
    if process.returncode != 0:
        raise SystemExit(f"backfill exited {process.returncode}:\n{stderr.decode()[-2000:]}")
    summary: dict[str, Any] = json.loads(stdout)
    return summary, elapsed, peak


async def trial(url: str, keys: int, backfill_first: bool, batch_size: int | None) -> Trial:
    if backfill_first:
        summary, process_s, peak = await run_backfill(url, batch_size)
        revoked_sb, set_based_s = await set_based(url)
    else:
        revoked_sb, set_based_s = await set_based(url)
        summary, process_s, peak = await run_backfill(url, batch_size)
    result = Trial(
        keys=keys,
        revoked_set_based=revoked_sb,
        set_based_s=set_based_s,
        revoked_backfill=summary["revoked"]["total"],
        backfill_s=summary["duration_seconds"],
        assessment_s=summary["assessment_seconds"],
        process_s=process_s,
        longest_transaction_ms=summary["longest_transaction_ms"],
        batches=summary["batches"],
        peak_rss=peak,
    )
    if result.revoked_backfill != result.revoked_set_based:
        raise SystemExit(
            f"the backfill revoked {result.revoked_backfill:,} keys, the UPDATE "
            f"{result.revoked_set_based:,}: they must do the same revocations"
        )
    print(
        f"  trial ({'backfill' if backfill_first else 'UPDATE'} first): "
        f"UPDATE {set_based_s:.2f} s, backfill {result.backfill_s:.2f} s "
        f"(assessment {result.assessment_s:.2f} s, {result.batches} batches, longest "
        f"transaction {result.longest_transaction_ms:.0f} ms, peak RSS "
        f"{peak / 2**20:.1f} MiB) -> {result.ratio:.0%}; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return result


async def measure(admin_url: str, keys: int, trials: int, batch_size: int | None) -> list[Trial]:
    print(f"{keys:,} keys:", flush=True)
    async with scratch_database(admin_url, "bench_backfill") as url:
        await seed(url, keys)
        return [await trial(url, keys, i % 2 == 1, batch_size) for i in range(trials)]


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} x {model}, {memory:.0f} GiB"


async def server(admin_url: str) -> str:
    conn = await asyncpg.connect(admin_url)
    try:
        settings = [
            await conn.fetchval(f"SHOW {name}") for name in ("server_version", "shared_buffers")
        ]
    finally:
        await conn.close()
    return f"PostgreSQL {settings[0]}, shared_buffers {settings[1]}"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


async def main(args: argparse.Namespace) -> None:
    admin_url = service_env()["CLEANUP_DATABASE_URL"]
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}; {await server(admin_url)}")
    results = {args.keys: await measure(admin_url, args.keys, args.trials, args.batch_size)}
    for extra in args.also:
        results[extra] = await measure(admin_url, extra, 1, args.batch_size)

    base = results[args.keys]
    set_based_s = statistics.median(t.set_based_s for t in base)
    backfill_s = statistics.median(t.backfill_s for t in base)
    revoked = base[0].revoked_set_based
    ratio = set_based_s / backfill_s
    longest = max(t.longest_transaction_ms for runs in results.values() for t in runs)
    peaks = {keys: max(t.peak_rss for t in runs) for keys, runs in results.items()}
    print()
    print(f"keys                     {args.keys:,} ({revoked:,} orphaned, revoked by both)")
    print(f"set-based UPDATE         {set_based_s:.2f} s  ({revoked / set_based_s:,.0f} keys/s)")
    print(
        f"backfill --execute       {backfill_s:.2f} s  ({revoked / backfill_s:,.0f} keys/s; "
        f"assessment {statistics.median(t.assessment_s for t in base):.2f} s, "
        f"process incl. start-up {statistics.median(t.process_s for t in base):.2f} s)"
    )
    ratios = ", ".join(f"{t.ratio:.0%}" for t in base)
    print(
        f"rate vs set-based        {ratio:.0%} (trials: {ratios})  target >= 80 %: "
        f"{verdict(ratio >= RATE_TARGET)}"
    )
    print(
        f"longest transaction      {longest:.0f} ms  target <= 250 ms: "
        f"{verdict(longest <= TRANSACTION_TARGET_MS)}"
    )
    for keys, runs in results.items():
        if keys != args.keys:
            t = runs[0]
            print(
                f"at {keys:,} keys          UPDATE {t.set_based_s:.2f} s, backfill "
                f"{t.backfill_s:.2f} s -> {t.ratio:.0%}"
            )
    sizes = sorted(peaks)
    flat = peaks[sizes[-1]] <= peaks[sizes[0]] * FLAT_TOLERANCE
    memory = ", ".join(f"{peaks[k] / 2**20:.1f} MiB at {k:,}" for k in sizes)
    print(
        f"peak RSS of the backfill {memory}"
        + (f"  flat: {verdict(flat)}" if len(sizes) > 1 else "")
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--also", type=int, action="append", default=[], metavar="KEYS")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--lanes", type=int, default=None, help="the backfill's --lanes (default: its own)"
    )
    parser.add_argument(
        "--notices",
        action="store_true",
        help="with CLEANUP_REVOCATIONS_TOPIC set: the backfill also writes the outbox",
    )
    parsed = parser.parse_args()
    if parsed.notices:
        NOTICES["CLEANUP_REVOCATIONS_TOPIC"] = "bench-revocations"
    if parsed.lanes:
        EXTRA_ARGS += ["--lanes", str(parsed.lanes)]
    asyncio.run(main(parsed))
