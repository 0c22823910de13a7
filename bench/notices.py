"""Revocation notices benchmark ("Targets", docs/design.md), in one run against the real broker and database.

    .venv/bin/python -m bench.notices [--events 100000] [--rate 500] [--seconds 20] [--steady-only]

1. `cleanup-worker run` on a removal stream (~5 keys per user) without notices, then the same
   stream (a new consumer group, the database reset) with CLEANUP_REVOCATIONS_TOPIC set: the
   throughput of each, and the second's until its last notice was acknowledged too.
2. At a steady rate with notices on: event time -> notice acknowledged (the worker's own
   `cleanup_notice_lag_seconds`), beside the revocation lag (event time -> commit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.consumer import (
    KEYS_PER_USER,
    PARTITIONS,
    T_REMOVED,
    Worker,
    percentile,
    print_targets,
    publish,
    removal,
    reset,
    seed_keys,
    wait_for_applied,
    worker_env,
)
from testkit.metrics import scrape
from testkit.processes import until_ready
from testkit.services import scratch_database, service_env


async def histogram(port: int, name: str) -> dict[float, float]:
    """The cumulative buckets of one of the worker's histograms."""
    return (await scrape(port)).buckets(name)


async def published_notices(port: int) -> int:
    return int((await scrape(port)).total("cleanup_notices_published_total"))


async def consume(env: dict[str, str], n: int, *, notices: bool) -> tuple[float, float | None]:
    """Events/s of one worker over the whole stream, and with notices the keys announced per
    second (from its first applied event until its last notice was acknowledged)."""
    async with Worker(env, os.devnull) as worker:
        first, last, first_count = await wait_for_applied(worker.port, n, timeout=600)
        if not notices:
            return (n - first_count) / max(last - first, 1e-3), None
        while await published_notices(worker.port) < n * KEYS_PER_USER:
            await asyncio.sleep(0.05)
        announced = time.perf_counter()
    return (n - first_count) / max(last - first, 1e-3), n * KEYS_PER_USER / (announced - first)


async def notice_lag_of(port: int, notices: int, timeout_s: float = 60) -> dict[float, float]:
    """The worker's notice-lag buckets once `notices` were acknowledged (or after `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        buckets = await histogram(port, "cleanup_notice_lag_seconds")
        if (buckets and buckets[float("inf")] >= notices) or time.monotonic() > deadline:
            return buckets
        await asyncio.sleep(0.2)


async def steady(
    bootstrap: str, topic: str, db: Any, env: dict[str, str], rate: int, secs: int
) -> tuple[dict[float, float], dict[float, float]]:
    """(notice lag, revocation lag) buckets at a steady `rate` of removals with notices on."""
    users = rate * secs
    await seed_keys(db, users, prefix="lag")
    async with Worker(env, os.devnull) as worker:
        await until_ready([worker.port])  # joined its group, and idle
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        futures = []
        started = time.perf_counter()
        for i in range(users):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            futures.append(await producer.send(topic, removal(i, datetime.now(UTC), "lag")))
        await asyncio.gather(*futures)
        await producer.stop()
        notice = await notice_lag_of(worker.port, users * KEYS_PER_USER)
        revocation = await histogram(worker.port, "cleanup_revocation_lag_seconds")
    return notice, revocation


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def create_topics(bootstrap: str, *names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    suffix = uuid.uuid4().hex[:8]
    topic, notices_topic = f"bench-removals-{suffix}", f"bench-revocations-{suffix}"
    await create_topics(bootstrap, topic, notices_topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(f"{topic}.dlq", 1, 1)])
    await admin.close()
    n = args.events
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_notices") as db_url:
        db = await asyncpg.connect(db_url)
        print(f"seeding {n} users x {KEYS_PER_USER} keys, publishing {n} removals ...")
        await seed_keys(db, n, prefix="u")
        await publish(bootstrap, topic, [removal(u, T_REMOVED) for u in range(n)])

        def env_of(group: str, notices: bool) -> dict[str, str]:
            extra = {"CLEANUP_REVOCATIONS_TOPIC": notices_topic} if notices else {}
            return worker_env(bootstrap, db_url, topic, f"bench-{group}-{suffix}", extra)

        rates: dict[bool, list[float]] = {False: [], True: []}
        announced: list[float] = []
        for trial in range(0 if args.steady_only else args.trials):
            for notices in (False, True) if trial % 2 == 0 else (True, False):
                rate, keys_rate = await consume(
                    env_of(f"{trial}{notices}", notices), n, notices=notices
                )
                rates[notices].append(rate)
                if keys_rate is None:
                    print(f"  trial {trial + 1} without notices: {rate:,.0f} events/s")
                else:
                    announced.append(keys_rate)
                    print(
                        f"  trial {trial + 1} with notices:    {rate:,.0f} events/s applied, "
                        f"{keys_rate:,.0f} keys/s announced (until the last acknowledgement)"
                    )
                await reset(db)
                await db.execute("TRUNCATE revocation_outbox, revocation_outbox_batches")
        off, on = (1.0, 1.0) if args.steady_only else (median(rates[False]), median(rates[True]))
        # The steady phase reads a topic of its own from its start.
        await create_topics(bootstrap, f"{topic}.steady")
        steady_env = env_of("steady", True) | {"CLEANUP_KAFKA_TOPICS": f"{topic}.steady"}
        notice, revocation = await steady(
            bootstrap, f"{topic}.steady", db, steady_env, args.rate, args.seconds
        )
        await db.close()

    ratio = on / off
    n50, n99 = percentile(notice, 0.50), percentile(notice, 0.99)
    r50, r99 = percentile(revocation, 0.50), percentile(revocation, 0.99)
    within = notice[0.1] / notice[float("inf")]
    lag_within = revocation[0.05] / revocation[float("inf")]
    rows = [
        ("throughput with notices >= 90% of without", f"{ratio:.0%} ({on:,.0f} vs {off:,.0f}/s)",
         ratio >= 0.9),
        (f"event -> notice acked p99 <= 100 ms at {args.rate}/s",
         f"p50 {n50 * 1000:.0f} ms, p99 {n99 * 1000:.0f} ms ({within:.1%} <= 100 ms)",
         within >= 0.99),
        (f"revocation lag p99 <= 50 ms at {args.rate}/s, notices on",
         f"p50 {r50 * 1000:.0f} ms, p99 {r99 * 1000:.0f} ms ({lag_within:.1%} <= 50 ms)",
         lag_within >= 0.99),
    ]  # fmt: skip
    if args.steady_only:
        rows = rows[1:]  # no throughput runs: nothing to compare
    print_targets(rows)
    if announced:
        print(f"(keys announced per second at full speed: {median(announced):,.0f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--steady-only",
        action="store_true",
        help="only the steady phase, on a fresh database (no full-speed runs before it)",
    )
    asyncio.run(main(parser.parse_args()))
