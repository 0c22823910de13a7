"""Scaling by replicas ("Targets", docs/design.md): the consumer benchmark's removal stream
applied by 1, 2 and 3 `cleanup-worker run` replicas in one consumer group, in one run.

    .venv/bin/python -m bench.replicas [--events 100000] [--replicas 1,2,3]

For each count: a topic of its own (6 partitions), the replicas started on it while it is
empty and waited for until each holds partitions, then the whole stream (~5 keys per user)
written in one Kafka transaction, so that it appears to the group at once (the replicas read
committed records only) and no replica starts before the others. The group's events/s runs
from that commit to the last applied event (the sum of every replica's own `/metrics`): from
the first applied event instead, the replicas' prefetched and parsed first batches (up to
four of their few) would fall before the start and flatter more replicas. Beside it the CPU
of the replicas (from before the stream was written: they were idle) and of PostgreSQL over
the same span. The reference, in the same run and database: the same revocations as one
set-based UPDATE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.consumer import (
    KEYS_PER_USER,
    PARTITIONS,
    T_REMOVED,
    Worker,
    applied_events,
    removal,
    reset,
    seed_keys,
    set_based_update,
    worker_env,
)
from bench.cost import server_cpu_seconds
from testkit.processes import until_ready
from testkit.services import scratch_database, service_env


async def publish_at_once(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Every value in one transaction: read_committed consumers see none, then all."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"bench-{uuid.uuid4().hex}", linger_ms=5
    )
    await producer.start()
    try:
        async with producer.transaction():
            for start in range(0, len(values), 5000):
                futures = [await producer.send(topic, v) for v in values[start : start + 5000]]
                await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def group_applied(ports: list[int]) -> int:
    return sum([await applied_events(port) for port in ports])


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def run_group(
    bootstrap: str, db_url: str, db: Any, replicas: int, n: int, suffix: str
) -> tuple[float, float, float]:
    """(events/s, replicas' CPU cores, PostgreSQL's CPU cores) of `replicas` workers in one
    group applying `n` removals from a topic of their own."""
    topic = f"bench-replicas-{replicas}-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    await admin.close()
    group = f"bench-replicas-{replicas}-{suffix}"
    async with AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(
                Worker(worker_env(bootstrap, db_url, topic, group), os.devnull)
            )
            for _ in range(replicas)
        ]
        ports = [worker.port for worker in workers]
        await until_ready(ports)  # the group has formed: every replica holds partitions
        processes = [psutil.Process(worker.process.pid) for worker in workers]
        cpu_before = sum(cpu_seconds(p) for p in processes)  # idle replicas, from here on
        db_before = await server_cpu_seconds(db)
        await publish_at_once(bootstrap, topic, [removal(u, T_REMOVED) for u in range(n)])
        first = time.perf_counter()  # the stream became visible to the group at once
        deadline = time.monotonic() + 600
        while (count := await group_applied(ports)) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"{replicas} replicas applied only {count} of {n} events")
            await asyncio.sleep(0.05)
        last = time.perf_counter()
        workers_cpu = sum(cpu_seconds(p) for p in processes) - cpu_before
        db_cpu = await server_cpu_seconds(db) - db_before
    elapsed = max(last - first, 1e-3)
    return n / elapsed, workers_cpu / elapsed, db_cpu / elapsed


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    suffix = uuid.uuid4().hex[:8]
    n = args.events
    counts = [int(c) for c in args.replicas.split(",")]
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_replicas") as db_url:
        db = await asyncpg.connect(db_url)
        print(f"seeding {n} users x {KEYS_PER_USER} keys ...")
        await seed_keys(db, n, prefix="u")
        update_rate = n / await set_based_update(db, n)
        print(f"  set-based UPDATE: {update_rate:,.0f} removals/s")
        await reset(db)
        results = []
        for replicas in counts:
            rate, workers_cores, db_cores = await run_group(
                bootstrap, db_url, db, replicas, n, suffix
            )
            results.append((replicas, rate, workers_cores, db_cores))
            print(
                f"  {replicas} replica(s): {rate:,.0f} events/s ({rate / update_rate:.2f}x the "
                f"UPDATE); CPU cores busy: replicas {workers_cores:.2f}, PostgreSQL {db_cores:.2f}"
            )
            await reset(db)
        await db.close()
    print()
    # CPU per 1 000 events varies less than wall-clock rates on a shared machine (a niced
    # benchmark gets more of the CPU with more processes): the figures to size with.
    print(
        f"{'replicas':>8}{'events/s':>11}{'x UPDATE':>10}{'x first':>9}"
        f"{'replicas cores':>16}{'PG cores':>10}{'replicas CPU s/1k':>19}{'PG CPU s/1k':>13}"
    )
    first_rate = results[0][1]
    for replicas, rate, workers_cores, db_cores in results:
        print(
            f"{replicas:>8}{rate:>11,.0f}{rate / update_rate:>10.2f}{rate / first_rate:>9.2f}"
            f"{workers_cores:>16.2f}{db_cores:>10.2f}"
            f"{workers_cores / rate * 1000:>19.3f}{db_cores / rate * 1000:>13.3f}"
        )
    print(f"(machine: {psutil.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--replicas", default="1,2,3", help="replica counts, in order")
    asyncio.run(main(parser.parse_args()))
