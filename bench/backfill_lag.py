"""The live worker's revocation lag while a backfill runs ("Targets", docs/design.md), in one run.

    .venv/bin/python -m bench.backfill_lag [--keys 1000000] [--replicas 1 --replicas 3]

For each replica count, in a scratch database holding --keys keys (10 % orphaned: the data of
bench.backfill) and on a 6-partition topic: that many `cleanup-worker run` replicas in one
group, and removals at a steady --rate (event time = when sent, each for a user with 5
keys, an active member until then, as a live removal's member is). The revocation lag
(event time -> commit: the workers' own histogram, summed over the replicas) is taken over
--seconds before the backfill, then over the time `cleanup-worker backfill --execute` runs
beside them.

--overlap gives the stream's users no membership rows: the backfill then revokes their keys
too, and its batches race the worker's R1 for the same rows (the worst case, where the two
could deadlock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.backfill import seed as seed_backfill_data
from bench.consumer import (
    PARTITIONS,
    Worker,
    percentile,
    print_targets,
    removal,
    seed_keys,
    worker_env,
)
from testkit.metrics import scrape
from testkit.processes import until_ready
from testkit.services import scratch_database, service_env
from testkit.waiting import eventually

LAG = "cleanup_revocation_lag_seconds"


async def lag_buckets(ports: list[int]) -> dict[float, float]:
    """The replicas' lag histograms, added up."""
    total: dict[float, float] = {}
    for port in ports:
        for bound, count in (await scrape(port)).buckets(LAG).items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {bound: after[bound] - before.get(bound, 0.0) for bound in after}


async def steady(bootstrap: str, topic: str, rate: int, stop: asyncio.Event) -> int:
    """Removals at `rate` per second until `stop`, for users lag0, lag1, ..."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    sent, started, pending = 0, time.perf_counter(), []
    try:
        while not stop.is_set():
            delay = started + sent / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(await producer.send(topic, removal(sent, datetime.now(UTC), "lag")))
            sent += 1
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def seed_members(db: Any, users: int, prefix: str) -> None:
    """The stream's users as active members, as a live removal's member is in production:
    their keys are not the backfill's to revoke until the worker has removed them."""
    await db.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, member_since, changed_at) "
        "SELECT 'acct-' || (u % 1000), $1 || u, 'active', NULL, timestamptz '2024-01-01' "
        "FROM generate_series(0, $2 - 1) AS u",
        prefix,
        users,
    )
    await db.execute("VACUUM ANALYZE account_memberships")


async def backfill(url: str, lanes: int) -> dict[str, Any]:
    env = {**os.environ, "CLEANUP_DATABASE_URL": url, "CLEANUP_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cleanup_worker", "backfill", "--execute", "--json",
        "--max-fraction", "0.5", "--lanes", str(lanes),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"backfill exited {process.returncode}:\n{err.decode()[-2000:]}")
    summary: dict[str, Any] = json.loads(out)
    return summary


async def measure(args: argparse.Namespace, replicas: int) -> list[tuple[str, str, bool]]:
    env = service_env()
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    topic = f"bench-backfill-lag-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    await admin.close()
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_backfill_lag") as url:
        await seed_backfill_data(url, args.keys)
        db = await asyncpg.connect(url)
        users = args.rate * (args.seconds + 60)
        await seed_keys(db, users, prefix="lag")
        if not args.overlap:
            await seed_members(db, users, prefix="lag")
        # The seed's dirty pages are written now, not by a checkpoint in the middle of the
        # measurement (as bench.backfill does before each of its trials).
        await db.execute("CHECKPOINT")
        await db.close()
        workers = [
            Worker(worker_env(bootstrap, url, topic, f"group-{topic}"), os.devnull)
            for _ in range(replicas)
        ]
        for worker in workers:
            await worker.__aenter__()
        try:
            ports = [worker.port for worker in workers]
            await until_ready(ports)  # the group formed and every replica has partitions
            stop = asyncio.Event()
            sending = asyncio.create_task(steady(bootstrap, topic, args.rate, stop))
            await asyncio.sleep(3)  # warm
            start = await lag_buckets(ports)
            await asyncio.sleep(args.seconds)
            before_end = await lag_buckets(ports)
            began = time.perf_counter()
            summary = await backfill(url, args.lanes)
            took = time.perf_counter() - began
            stop.set()
            sent = await sending

            async def all_committed() -> bool:  # every removal sent has had its lag observed
                return (await lag_buckets(ports)).get(float("inf"), 0.0) >= sent

            await eventually(all_committed, timeout=60, interval=0.2)
            during_end = await lag_buckets(ports)
        finally:
            for worker in workers:
                await worker.__aexit__()
    before, during = delta(before_end, start), delta(during_end, before_end)
    b50, b99 = percentile(before, 0.5), percentile(before, 0.99)
    d50, d99 = percentile(during, 0.5), percentile(during, 0.99)
    print(
        f"  {replicas} replica(s): backfill revoked {summary['revoked']['total']:,} keys in "
        f"{took:.1f} s; lag before p50 {b50 * 1000:.0f} ms p99 {b99 * 1000:.0f} ms "
        f"({before[float('inf')]:.0f} removals), during p50 {d50 * 1000:.0f} ms p99 "
        f"{d99 * 1000:.0f} ms ({during[float('inf')]:.0f} removals)",
        flush=True,
    )
    within = during[0.1] / during[float("inf")]
    return [
        (
            f"lag p99 <= 100 ms during backfill, {replicas} repl.",
            f"{d99 * 1000:.0f} ms ({within:.1%} <= 100 ms)",
            within >= 0.99,
        )
    ]


async def main(args: argparse.Namespace) -> None:
    rows = []
    for replicas in args.replicas or [1, 3]:
        rows += await measure(args, replicas)
    print_targets(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--replicas", type=int, action="append", default=[])
    parser.add_argument("--lanes", type=int, default=1, help="the backfill's --lanes")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="the stream's users have no membership rows, so the backfill revokes their keys "
        "too, racing the worker for the same rows (the worst case)",
    )
    asyncio.run(main(parser.parse_args()))
