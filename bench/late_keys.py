"""Late-key sweep benchmark ("Targets", docs/design.md), in one run against the real broker and database.

    .venv/bin/python -m bench.late_keys [--events 60000] [--trials 2] [--rate 200] [--seconds 20]

1. Consumer throughput with the sweep on (R1 re-check and R6, settle --settle) against the
   same run with it off (CLEANUP_LATE_KEYS=off, one sweep a minute), trials alternating
   (off, on, on, off, ...), each on a removal stream of its own (~5 keys per user) while a
   key service creates --key-rate keys/s for removed users (late keys: R6's work). Besides
   events/s, the CPU time of the worker and its PostgreSQL backends per event: on a machine
   shared with other work, wall-clock rates vary by tens of percent between trials.
2. At a steady --rate removals/s: concurrent keys (their transaction begins before their
   removal is produced and commits --hold seconds after), commit -> revocation, and late
   keys (created for members removed a second earlier), creation -> revocation - settle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.consumer import (
    PARTITIONS,
    T_REMOVED,
    Worker,
    percentile,
    print_targets,
    publish,
    removal,
    seed_keys,
    wait_for_applied,
    worker_env,
)
from testkit.metrics import scrape
from testkit.services import scratch_database, service_env

OFF = {"CLEANUP_LATE_KEYS": "off", "CLEANUP_LATE_KEY_SWEEP_INTERVAL_S": "60"}

INSERT_KEY = (
    "INSERT INTO api_keys (id, account_id, iam_id, key_hash) VALUES ($1, $2, $3, 'bench') "
    "RETURNING id"
)


async def new_topic(bootstrap: str) -> str:
    topic = f"bench-late-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    await admin.close()
    return topic


async def metric_values(port: int, family_name: str) -> dict[str, float]:
    """Sample name (with its labels) -> value, for one family of the worker's /metrics."""
    values = {}
    for (name, labels), value in (await scrape(port)).samples.items():
        if name == family_name or name.startswith(f"{family_name}_"):
            text = ",".join(f"{k}={v}" for k, v in sorted(labels))
            values[f"{name}{{{text}}}"] = value
    return values


async def key_service(pool: Any, prefix: str, users: int, rate: float) -> None:
    """Creates keys for random users of the stream (default created_at), until cancelled."""
    rng = random.Random(7)
    while True:
        user = rng.randrange(users)
        await pool.execute(INSERT_KEY, uuid.uuid4(), f"acct-{user % 1000}", f"{prefix}{user}")
        await asyncio.sleep(1 / rate)


class CpuMeter:
    """CPU seconds of the worker process and of the PostgreSQL backends serving it (found by
    database and application name), so that a busy shared machine skews cost less than
    wall-clock rates. Backends are sampled until the end, so pool connections opened during
    the run count from their start."""

    def __init__(self, db: Any, pid: int) -> None:
        self._db = db
        self._worker = psutil.Process(pid)
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return float(times.user + times.system)

    async def _sample(self) -> dict[int, float]:
        pids = await self._db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'cleanup-worker'"
        )
        found = {}
        for row in pids:
            with contextlib.suppress(psutil.Error):
                found[row["pid"]] = self._cpu(psutil.Process(row["pid"]))
        with contextlib.suppress(psutil.Error):
            found[-1] = self._cpu(self._worker)
        return found

    async def start(self) -> None:
        self._start = await self._sample()
        self._last = dict(self._start)

    async def sample(self) -> None:
        self._last.update(await self._sample())

    def seconds(self) -> float:
        return sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())


async def throughput(
    args: argparse.Namespace, bootstrap: str, db_url: str, db: Any, pool: Any, trial: int, on: bool
) -> tuple[float, float, float]:
    """Events/s of `cleanup-worker run` on a fresh stream, CPU ms per 1000 events (worker and
    its backends), and its sweeps' total seconds."""
    n, prefix = args.events, f"t{trial}u"
    topic = await new_topic(bootstrap)
    await seed_keys(db, n, prefix=prefix)
    await publish(bootstrap, topic, [removal(u, T_REMOVED, prefix=prefix) for u in range(n)])
    extra = {"CLEANUP_LATE_KEY_SETTLE_S": str(args.settle)} if on else OFF
    async with Worker(
        worker_env(bootstrap, db_url, topic, f"group-{topic}", extra), args.worker_log
    ) as worker:
        meter = CpuMeter(db, worker.process.pid)
        await meter.start()
        creating = asyncio.create_task(key_service(pool, prefix, n, args.key_rate))
        sampling = asyncio.create_task(sample_every(meter, 0.5))
        try:
            first, last, first_count = await wait_for_applied(worker.port, n, timeout=600)
        finally:
            creating.cancel()
            sampling.cancel()
        await meter.sample()
        sweeps = await metric_values(worker.port, "cleanup_late_key_sweep_duration_seconds")
    swept_s = sum(v for k, v in sweeps.items() if "_sum" in k)
    return (n - first_count) / (last - first), meter.seconds() / n * 1e6, swept_s


async def sample_every(meter: CpuMeter, seconds: float) -> None:
    while True:
        await meter.sample()
        await asyncio.sleep(seconds)


async def steady(
    args: argparse.Namespace, bootstrap: str, db_url: str, db: Any, pool: Any
) -> dict[str, Any]:
    """Commit -> revocation of concurrent keys, creation -> revocation of late keys."""
    users = args.rate * args.seconds
    topic = await new_topic(bootstrap)
    await seed_keys(db, users, prefix="lag")
    extra = {"CLEANUP_LATE_KEY_SETTLE_S": str(args.settle)}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    concurrent: list[tuple[uuid.UUID, datetime]] = []
    late: list[uuid.UUID] = []
    produced = 0

    async def concurrent_key(j: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            key_id = await conn.fetchval(INSERT_KEY, uuid.uuid4(), f"acct-{j % 1000}", f"ck{j}")
            sent = await producer.send(topic, removal(j, datetime.now(UTC), prefix="ck"))
            await sent
            await asyncio.sleep(args.hold)
            concurrent.append((key_id, await conn.fetchval("SELECT clock_timestamp()")))

    async def load() -> None:
        nonlocal produced
        started = time.perf_counter()
        holders = []
        for i in range(users):
            delay = started + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(topic, removal(i, datetime.now(UTC), prefix="lag"))
            produced = i + 1
            if i % (args.rate // args.key_rate) == 0:
                holders.append(asyncio.create_task(concurrent_key(i)))
                gone = produced - args.rate  # removed about a second ago
                if gone > 0:
                    user = random.randrange(gone)
                    late.append(
                        await pool.fetchval(
                            INSERT_KEY, uuid.uuid4(), f"acct-{user % 1000}", f"lag{user}"
                        )
                    )
        await asyncio.gather(*holders)

    async with Worker(
        worker_env(bootstrap, db_url, topic, f"group-{topic}", extra), args.worker_log
    ) as worker:
        await load()
        await producer.stop()
        ids = [key for key, _ in concurrent] + late
        deadline = time.monotonic() + args.settle + 30
        while time.monotonic() < deadline:
            left = await db.fetchval(
                "SELECT count(*) FROM api_keys WHERE id = ANY($1) AND revoked_at IS NULL", ids
            )
            if left == 0:
                break
            await asyncio.sleep(0.5)
        revoked = await metric_values(worker.port, "cleanup_late_keys_revoked")
        sweeps = await metric_values(worker.port, "cleanup_late_key_sweep_duration_seconds")
    rows = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT id, created_at, revoked_at, revocation_reason FROM api_keys WHERE id = ANY($1)",
            ids,
        )
    }
    unrevoked = sum(1 for r in rows.values() if r["revoked_at"] is None)
    recheck = sorted(
        (rows[key]["revoked_at"] - committed).total_seconds()
        for key, committed in concurrent
        if rows[key]["revoked_at"] is not None
    )
    orphaned = sorted(
        (rows[key]["revoked_at"] - rows[key]["created_at"]).total_seconds() - args.settle
        for key in late
        if rows[key]["revoked_at"] is not None
    )
    buckets = {
        float(k.split("le=")[1].split(",")[0].rstrip("}")): v
        for k, v in sweeps.items()
        if "_bucket" in k
    }
    return {
        "recheck": recheck,
        "late": orphaned,
        "unrevoked": unrevoked,
        "concurrent": len(concurrent),
        "late_keys": len(late),
        "by_rule": revoked,
        "sweep_p50": percentile(buckets, 0.5),
        "sweep_p99": percentile(buckets, 0.99),
    }


def q(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))] if values else float("nan")


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_late_keys") as db_url:
        db = await asyncpg.connect(db_url)
        pool = await asyncpg.create_pool(db_url, min_size=2, max_size=40)
        rates: dict[bool, list[float]] = {False: [], True: []}
        costs: dict[bool, list[float]] = {False: [], True: []}
        order = [trial % 4 in (1, 2) for trial in range(2 * args.trials)]  # off on on off ...
        for trial, on in enumerate(order):
            rate, cost, swept_s = await throughput(args, bootstrap, db_url, db, pool, trial, on)
            rates[on].append(rate)
            costs[on].append(cost)
            print(
                f"  trial {trial + 1} sweep {'on ' if on else 'off'}: {rate:,.0f} events/s, "
                f"{cost:.0f} CPU ms per 1000 events ({args.events} events; sweeps took "
                f"{swept_s:.2f} s in all)"
            )
        found = await steady(args, bootstrap, db_url, db, pool)
        await pool.close()
        await db.close()

    off_rate, on_rate = statistics.median(rates[False]), statistics.median(rates[True])
    off_cost, on_cost = statistics.median(costs[False]), statistics.median(costs[True])
    recheck, late = found["recheck"], found["late"]
    print(f"  revocations by rule: {found['by_rule']}")
    print(
        f"  sweep duration p50 {found['sweep_p50'] * 1000:.1f} ms, "
        f"p99 {found['sweep_p99'] * 1000:.1f} ms; keys left unrevoked: {found['unrevoked']}"
    )
    rows = [
        ("throughput, sweep on >= 90% of off",
         f"{on_rate / off_rate:.0%} ({on_rate:,.0f} vs {off_rate:,.0f}/s)",
         on_rate >= 0.9 * off_rate),
        ("CPU per event, sweep off / on (>= 90%)",
         f"{off_cost / on_cost:.0%} ({on_cost:.0f} vs {off_cost:.0f} ms/1000)",
         off_cost >= 0.9 * on_cost),
        (f"re-check p99 commit->revoked <= 2 s ({found['concurrent']} keys)",
         f"p50 {q(recheck, 0.5):.2f} s, p99 {q(recheck, 0.99):.2f} s",
         len(recheck) == found["concurrent"] and q(recheck, 0.99) <= 2),
        (f"R6 p99 created->revoked <= settle + 2 s ({found['late_keys']} keys)",
         f"settle + {q(late, 0.99):.2f} s (p50 + {q(late, 0.5):.2f})",
         len(late) == found["late_keys"] and q(late, 0.99) <= 2),
    ]  # fmt: skip
    print_targets(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--trials", type=int, default=2, help="trials of each mode")
    parser.add_argument("--key-rate", type=int, default=20, help="keys created per second")
    parser.add_argument("--settle", type=float, default=2.0, help="CLEANUP_LATE_KEY_SETTLE_S")
    parser.add_argument("--rate", type=int, default=200, help="steady removals per second")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--hold", type=float, default=1.0, help="concurrent key: commit delay")
    parser.add_argument("--worker-log", default=os.devnull, help="where the worker's log goes")
    asyncio.run(main(parser.parse_args()))
