"""Where a removal's cost goes: the worker and the set-based UPDATE, per 1 000 events.

    .venv/bin/python -m bench.cost [--events 30000] [--notices] [--profile STACKS.txt]

Both apply the same removals (5 keys each) to the same scratch database in one run. For
each it reports, per 1 000 events: PostgreSQL's CPU time (every server process's user and
system time), WAL bytes, buffers dirtied, statements and round trips; and for the worker
its own CPU time and statements per batch. Then the worker's statements one by one
(pg_stat_statements: calls, rows, time, buffers dirtied, WAL), the table that says which
statement, index or row costs what. With `--notices`, also the run until the last notice was
acknowledged: the relay's batches and statements per 1 000 notices. `--profile` samples the
worker with py-spy while it consumes (and then until its last notice), keeps the collapsed
stacks (flamegraph.pl input) and prints where its CPU went.

Needs pg_stat_statements preloaded: `scripts/dev-services up` starts PostgreSQL so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.consumer import (
    KEYS_PER_USER,
    PARTITIONS,
    T_REMOVED,
    Worker,
    publish,
    removal,
    reset,
    seed_keys,
    set_based_update,
    wait_for_applied,
    worker_env,
)
from testkit.metrics import scrape
from testkit.processes import until_ready
from testkit.services import scratch_database, service_env


@dataclass
class Snapshot:
    """Cumulative counters of the database (and of one client process) at one moment."""

    wal_bytes: int  # position in the WAL, in bytes
    server_cpu_s: float
    statements: dict[str, dict[str, float]]
    client_cpu_s: float = 0.0


async def server_cpu_seconds(db: Any) -> float:
    """User + system CPU of every process of the PostgreSQL server (it runs on this host)."""
    postmaster = psutil.Process(await db.fetchval("SELECT pg_backend_pid()")).parent()
    total = 0.0
    for process in [postmaster, *postmaster.children()]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


STATEMENTS = """
SELECT queryid::text AS id, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query,
       calls, rows, total_exec_time AS ms, shared_blks_dirtied AS dirtied,
       shared_blks_hit + shared_blks_read AS touched, wal_bytes
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)
"""


async def snapshot(db: Any, database: str, client: psutil.Process | None = None) -> Snapshot:
    rows = await db.fetch(STATEMENTS, database)
    statements = {
        row["id"]: {key: row[key] for key in ("query", "calls", "rows", "ms", "dirtied", "touched")}
        | {"wal_bytes": float(row["wal_bytes"])}
        for row in rows
    }
    client_cpu = 0.0
    if client is not None:
        times = client.cpu_times()
        client_cpu = times.user + times.system
    return Snapshot(
        int(await db.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")),
        await server_cpu_seconds(db),
        statements,
        client_cpu,
    )


@dataclass
class Cost:
    """The difference of two snapshots, per 1 000 events."""

    name: str
    events: int
    seconds: float
    wal_bytes: float
    server_cpu_s: float
    dirtied: float
    statements: float
    client_cpu_s: float
    by_statement: list[dict[str, Any]]

    def per_k(self, value: float) -> float:
        return value * 1000 / self.events


def cost_between(name: str, events: int, seconds: float, before: Snapshot, after: Snapshot) -> Cost:
    wal = after.wal_bytes - before.wal_bytes
    by_statement = []
    for key, now in after.statements.items():
        then = before.statements.get(key, {})
        delta = {m: now[m] - then.get(m, 0) for m in ("calls", "rows", "ms", "dirtied", "touched")}
        delta["wal_bytes"] = now["wal_bytes"] - then.get("wal_bytes", 0)
        if delta["calls"] > 0 and "pg_stat_statements" not in str(now["query"]):
            by_statement.append({"query": now["query"], **delta})
    by_statement.sort(key=lambda s: -s["ms"])
    return Cost(
        name=name,
        events=events,
        seconds=seconds,
        wal_bytes=float(wal),
        server_cpu_s=after.server_cpu_s - before.server_cpu_s,
        dirtied=sum(s["dirtied"] for s in by_statement),
        statements=sum(s["calls"] for s in by_statement),
        client_cpu_s=after.client_cpu_s - before.client_cpu_s,
        by_statement=by_statement,
    )


async def batches(port: int) -> int:
    """Batches the worker has applied (its batch-duration histogram's count)."""
    return int((await scrape(port)).value("cleanup_batch_duration_seconds_count"))


def print_costs(update: Cost, worker: Cost, worker_batches: int) -> None:
    print()
    print(f"per 1 000 events ({worker.events} removals, {KEYS_PER_USER} keys each)")
    print(f"{'':34}{'set-based UPDATE':>18}{'worker':>14}{'ratio':>8}")
    rows = [
        ("elapsed (s)", update.per_k(update.seconds), worker.per_k(worker.seconds)),
        ("PostgreSQL CPU (s)", update.per_k(update.server_cpu_s), worker.per_k(worker.server_cpu_s)),
        ("WAL (KiB)", update.per_k(update.wal_bytes) / 1024, worker.per_k(worker.wal_bytes) / 1024),
        ("buffers dirtied", update.per_k(update.dirtied), worker.per_k(worker.dirtied)),
        ("statements", update.per_k(update.statements), worker.per_k(worker.statements)),
        ("worker CPU (s)", 0.0, worker.per_k(worker.client_cpu_s)),
    ]  # fmt: skip
    for label, a, b in rows:
        ratio = f"{b / a:.2f}x" if a else ""
        print(f"{label:<34}{a:>18.3f}{b:>14.3f}{ratio:>8}")
    keys = worker.events * KEYS_PER_USER
    print(
        f"WAL per revoked key: UPDATE {update.wal_bytes / keys:.0f} B, worker "
        f"{worker.wal_bytes / keys:.0f} B ({worker.wal_bytes / update.wal_bytes:.2f}x)"
    )
    if worker_batches:
        print(
            f"worker batches: {worker_batches}, {worker.events / worker_batches:.0f} events and "
            f"{worker.statements / worker_batches:.1f} statements (round trips) each"
        )
    print()
    print("the worker's statements, per 1 000 events (pg_stat_statements)")
    print(f"{'calls':>7}{'rows':>8}{'ms':>8}{'dirtied':>9}{'WAL KiB':>9}  statement")
    for s in worker.by_statement:
        print(
            f"{worker.per_k(s['calls']):>7.1f}{worker.per_k(s['rows']):>8.0f}"
            f"{worker.per_k(s['ms']):>8.1f}{worker.per_k(s['dirtied']):>9.0f}"
            f"{worker.per_k(s['wal_bytes']) / 1024:>9.0f}  {s['query']}"
        )


async def wait_for_notices(port: int, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await scrape(port)).total("cleanup_notices_published_total") < target:
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker announced fewer than {target} keys in {timeout}s")
        await asyncio.sleep(0.05)


def print_notice_costs(announced: Cost, notices: int) -> None:
    """From the first applied event until the last notice was acknowledged: the whole run's
    cost, and the relay's statements (those on the outbox) per 1 000 notices."""
    per_notice_k = 1000 / notices
    # (The claim's text is cut before its table's name.)
    claim = "SELECT id, key_ids, account_ids, iam_ids, reasons"
    relay = [
        s for s in announced.by_statement
        if "revocation_outbox" in str(s["query"]) or str(s["query"]).strip().startswith(claim)
    ]  # fmt: skip
    cycles = sum(s["calls"] for s in relay if str(s["query"]).strip().startswith(claim))
    print()
    print(f"until the last of {notices} notices was acknowledged ({announced.seconds:.2f} s):")
    print(
        f"  per 1 000 events: PostgreSQL CPU {announced.per_k(announced.server_cpu_s):.3f} s, "
        f"worker CPU {announced.per_k(announced.client_cpu_s):.3f} s, "
        f"statements {announced.per_k(announced.statements):.1f}"
    )
    print(
        f"  per 1 000 notices: relay batches {cycles * per_notice_k:.1f} "
        f"({notices / max(cycles, 1):.0f} notices each), outbox statements "
        f"{sum(s['calls'] for s in relay) * per_notice_k:.1f}, all statements "
        f"{announced.statements * per_notice_k:.1f}, WAL "
        f"{announced.wal_bytes * per_notice_k / 1024:.0f} KiB"
    )
    for s in relay:
        print(f"{s['calls'] * per_notice_k:>9.1f}  {s['query']}")


def print_profile(path: str, top: int = 15) -> None:
    """The worker's CPU by library, and the functions where its samples end (self time)."""
    by_leaf: Counter[str] = Counter()
    by_library: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8") as stacks:
        for line in stacks:
            stack, _, count = line.rstrip().rpartition(" ")
            samples = int(count)
            total += samples
            frames = stack.split(";")
            by_leaf[frames[-1]] += samples
            for library in ("aiokafka", "asyncpg", "cleanup_worker", "prometheus_client", "json"):
                if any(f"/{library}/" in frame or f"({library}" in frame for frame in frames):
                    by_library[library] += samples
    print(f"\nthe worker's CPU samples ({total}; stacks in {path})")
    for library, samples in by_library.most_common():
        print(f"  {samples / total:6.1%} under {library}")
    print("  where the samples end:")
    for leaf, samples in by_leaf.most_common(top):
        print(f"  {samples / total:6.1%}  {leaf[:110]}")


def start_profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "py-spy"),
            "record",
            "--format",
            "raw",
            "--pid",
            str(pid),
            "--output",
            output,
            "--rate",
            "200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench-cost-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    await admin.close()
    n = args.events
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_cost") as db_url:
        database = db_url.rsplit("/", 1)[1]
        db = await asyncpg.connect(db_url)
        try:
            await db.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await db.fetch("SELECT 1 FROM pg_stat_statements LIMIT 1")
        except asyncpg.PostgresError as exc:
            raise SystemExit(
                f"pg_stat_statements is not available ({exc}); restart the dev services: "
                "scripts/dev-services down && scripts/dev-services up"
            ) from exc
        print(f"seeding {n} users x {KEYS_PER_USER} keys ...")
        await seed_keys(db, n, prefix="u")
        await db.execute("CHECKPOINT")  # full-page images count alike for both

        before = await snapshot(db, database)
        update_s = await set_based_update(db, n)
        update = cost_between("update", n, update_s, before, await snapshot(db, database))
        await reset(db)
        await db.execute("CHECKPOINT")

        extra = {"CLEANUP_REVOCATIONS_TOPIC": f"{topic}.notices"} if args.notices else {}
        if args.notices:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            await admin.create_topics([NewTopic(f"{topic}.notices", PARTITIONS, 1)])
            await admin.close()
        wenv = worker_env(bootstrap, db_url, topic, f"bench-{suffix}", extra)
        async with Worker(wenv, args.worker_log) as worker:
            process = psutil.Process(worker.process.pid)
            # Counted from a ready worker on an empty topic: start-up is not a removal's cost.
            await until_ready([worker.port])
            before = await snapshot(db, database, process)
            batches_before = await batches(worker.port)
            profiler = start_profiler(process.pid, args.profile) if args.profile else None
            print(f"publishing {n} removals to the running worker ...")
            await publish(bootstrap, topic, [removal(u, T_REMOVED) for u in range(n)])
            first, last, first_count = await wait_for_applied(worker.port, n, timeout=600)
            after = await snapshot(db, database, process)
            worker_batches = await batches(worker.port) - batches_before
            announced = None
            if args.notices:  # the relay's work too (and in the profile)
                await wait_for_notices(worker.port, n * KEYS_PER_USER, timeout=600)
                announced = cost_between(
                    "announced", n, time.perf_counter() - first, before,
                    await snapshot(db, database, process),
                )  # fmt: skip
            if profiler:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
                profiler.wait()
        print(f"worker: {(n - first_count) / (last - first):,.0f} events/s while it had work")
        worker_cost = cost_between("worker", n, last - first, before, after)
        await db.close()
    print_costs(update, worker_cost, worker_batches)
    if announced is not None:
        print_notice_costs(announced, n * KEYS_PER_USER)
    if args.profile:
        print_profile(args.profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--notices", action="store_true", help="revocation notices on")
    parser.add_argument("--profile", metavar="STACKS.txt", help="sample the worker with py-spy")
    parser.add_argument("--worker-log", default=os.devnull, help="where the worker's log goes")
    asyncio.run(main(parser.parse_args()))
