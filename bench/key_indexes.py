"""What each index on api_keys costs a revocation (docs/performance.md), in one run.

    .venv/bin/python -m bench.key_indexes [--users 100000] [--trials 1]

A revocation sets `revoked_at`, which an index predicate reads, so it is never a HOT update:
every index whose predicate the revoked row still meets takes a new entry. For each set of
indexes below, in a scratch database of its own: N users with 5 keys each (the consumer
benchmark's data), a CHECKPOINT, then the same revocations as one set-based UPDATE; its time,
the WAL it wrote per key, and how many of the updates were HOT.

- `ours`: the indexes the migrations create (as `explain` and `report` need them);
- `live only`: without the two that hold revoked keys (`api_keys_by_member`,
  `api_keys_by_revoked_at`): what a revocation cost before migration 0010;
- `no by-member`: without `api_keys_by_member` only (what `explain --member` reads);
- `no by-revoked-at`: without `api_keys_by_revoked_at` only (what `report` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import asyncpg

from bench.consumer import KEYS_PER_USER, seed_keys, set_based_update
from testkit.services import scratch_database, service_env

VARIANTS = {
    "ours": "",
    "live only": "DROP INDEX api_keys_by_member; DROP INDEX api_keys_by_revoked_at",
    "no by-member": "DROP INDEX api_keys_by_member",
    "no by-revoked-at": "DROP INDEX api_keys_by_revoked_at",
}


async def measure(admin_url: str, ddl: str, users: int) -> tuple[float, float, int]:
    """(UPDATE seconds, WAL bytes per key, HOT updates) for one set of indexes."""
    async with scratch_database(admin_url, "bench_key_indexes") as url:
        db = await asyncpg.connect(url)
        try:
            if ddl:
                await db.execute(ddl)
            await seed_keys(db, users, prefix="u")
            await db.execute("CHECKPOINT")
            before = await db.fetchval("SELECT pg_current_wal_lsn()")
            seconds = await set_based_update(db, users)
            wal = await db.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", before)
            await db.execute("SELECT pg_stat_force_next_flush()")
            hot = await db.fetchval(
                "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'api_keys'"
            )
        finally:
            await db.close()
    return seconds, float(wal) / (users * KEYS_PER_USER), int(hot or 0)


async def main(args: argparse.Namespace) -> None:
    admin_url = service_env()["CLEANUP_DATABASE_URL"]
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in VARIANTS}
    for trial in range(args.trials):
        names = list(VARIANTS) if trial % 2 == 0 else list(reversed(VARIANTS))
        for name in names:
            results[name].append(await measure(admin_url, VARIANTS[name], args.users))
    keys = args.users * KEYS_PER_USER
    base = statistics.median(r[0] for r in results["ours"])
    print(f"{keys:,} keys revoked by one set-based UPDATE, medians of {args.trials} trial(s):")
    print(f"{'indexes':<20}{'UPDATE s':>10}{'keys/s':>10}{'WAL B/key':>11}{'HOT':>8}{'speed':>8}")
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        wal = statistics.median(r[1] for r in runs)
        hot = max(r[2] for r in runs)
        print(
            f"{name:<20}{seconds:>10.2f}{keys / seconds:>10,.0f}{wal:>11.0f}{hot:>8}"
            f"{base / seconds:>8.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
