"""Consumer benchmark ("Targets", docs/design.md), all in one run against the real broker and database.

    .venv/bin/python -m bench.consumer [--events 100000] [--naive-events 3000]

1. PostgreSQL alone: the same revocations as one set-based UPDATE (the ceiling).
2. A naive consumer written here: one transaction and one offset commit per event.
3. `cleanup-worker run` as a real process on the full removal stream (~5 keys per user).
4. Revocation lag at a steady 500 events/s (the worker's own histogram, event time -> commit).
5. The worker's peak resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from cleanup_worker.adapters.cloudevents.binding import parse_record
from cleanup_worker.domain.events import Change, EventTypes, MembershipEvent
from cleanup_worker.settings import Settings
from testkit import processes
from testkit.metrics import scrape
from testkit.processes import free_port
from testkit.services import scratch_database, service_env

T_KEYS = datetime(2026, 1, 1, tzinfo=UTC)
T_REMOVED = T_KEYS + timedelta(days=1)
KEYS_PER_USER = 5
PARTITIONS = 6


def removal(user: int, when: datetime, prefix: str = "u") -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/bench",
            "type": "account.member.removed",
            "time": when.isoformat(),
            "data": {"account_id": f"acct-{user % 1000}", "iam_id": f"{prefix}{user}"},
        }
    ).encode()


async def seed_keys(db: Any, users: int, prefix: str) -> None:
    await db.execute(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at) "
        "SELECT gen_random_uuid(), 'acct-' || (u % 1000), $1 || u, md5(u::text || k::text), $2 "
        "FROM generate_series(0, $3 - 1) AS u, generate_series(1, $4) AS k",
        prefix,
        T_KEYS,
        users,
        KEYS_PER_USER,
    )
    await db.execute("VACUUM ANALYZE api_keys")
    # The pages this and the phases before it dirtied are written now: a phase measured
    # next (a steady rate's lag) starts from a quiet database, not during the checkpoint
    # that a full-speed run of hundreds of thousands of revocations leaves behind.
    await db.execute("CHECKPOINT")


async def reset(db: Any) -> None:
    # Un-revoking is what R4's trigger (migration 0007) refuses; the benchmark owns its scratch
    # database and takes the documented way around it, in one transaction.
    await db.execute(
        "BEGIN; ALTER TABLE api_keys DISABLE TRIGGER api_keys_revocation_is_permanent; "
        "UPDATE api_keys SET revoked_at = NULL, revocation_reason = NULL, revoked_by = NULL "
        "WHERE revoked_at IS NOT NULL; "
        "ALTER TABLE api_keys ENABLE ALWAYS TRIGGER api_keys_revocation_is_permanent; COMMIT"
    )
    await db.execute("TRUNCATE membership_events, account_memberships, membership_baselines")
    await db.execute("VACUUM ANALYZE")


async def set_based_update(db: Any, users: int) -> float:
    """Seconds for PostgreSQL to apply every removal as one UPDATE."""
    await db.execute(
        "CREATE TEMP TABLE removals AS SELECT 'acct-' || (u % 1000) AS account_id, "
        "'u' || u AS iam_id, $1::timestamptz AS removed_at FROM generate_series(0, $2 - 1) AS u",
        T_REMOVED,
        users,
    )
    await db.execute("ANALYZE removals")
    started = time.perf_counter()
    status = await db.execute(
        "UPDATE api_keys AS k SET revoked_at = now(), revocation_reason = 'member_removed', "
        "revoked_by = 'bench' FROM removals AS r WHERE k.account_id = r.account_id "
        "AND k.iam_id = r.iam_id AND k.created_at <= r.removed_at AND k.revoked_at IS NULL"
    )
    elapsed = time.perf_counter() - started
    assert status == f"UPDATE {users * KEYS_PER_USER}", status
    return elapsed


async def publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(values), 5000):
            futures = [await producer.send(topic, v) for v in values[start : start + 5000]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def naive_consumer(bootstrap: str, topic: str, db_url: str, limit: int) -> float:
    """Events per second of the obvious design: per event, one transaction and one commit."""
    conn = await asyncpg.connect(db_url)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"naive-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    types = EventTypes()
    done = 0
    started = 0.0
    try:
        while done < limit:
            record = await consumer.getone()
            if done == 0:
                started = time.perf_counter()
            parsed = parse_record(record.value, record.headers, types=types, max_bytes=65536)
            assert isinstance(parsed, MembershipEvent)
            async with conn.transaction():
                new = await conn.fetchval(
                    "INSERT INTO membership_events (source, event_id, account_id, iam_id, change, "
                    "event_time, event_type) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                    "ON CONFLICT DO NOTHING RETURNING 1",
                    parsed.source, parsed.id, parsed.account_id, parsed.iam_id,
                    parsed.change.value, parsed.time, parsed.type,
                )  # fmt: skip
                if new and parsed.change is Change.REMOVED:
                    await conn.execute(
                        "UPDATE api_keys SET revoked_at = now(), revocation_reason = "
                        "'member_removed', revoked_by = $4 WHERE account_id = $1 AND iam_id = $2 "
                        "AND created_at <= $3 AND revoked_at IS NULL",
                        parsed.account_id, parsed.iam_id, parsed.time, parsed.ref,
                    )  # fmt: skip
                    await conn.execute(
                        "INSERT INTO account_memberships VALUES ($1, $2, 'removed', NULL, $3) "
                        "ON CONFLICT (account_id, iam_id) DO UPDATE SET state = 'removed', "
                        "member_since = NULL, changed_at = EXCLUDED.changed_at "
                        "WHERE account_memberships.changed_at < EXCLUDED.changed_at",
                        parsed.account_id, parsed.iam_id, parsed.time,
                    )  # fmt: skip
            await consumer.commit()
            done += 1
        return (done - 1) / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await conn.close()


def busy_seconds(times: Any) -> float:
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def scrape_lag_buckets(port: int) -> dict[float, float]:
    return (await scrape(port)).buckets("cleanup_revocation_lag_seconds")


async def applied_events(port: int) -> int:
    """The worker's own count (a scrape costs the database nothing, unlike count(*))."""
    return int((await scrape(port)).total("cleanup_events_total", outcome="applied"))


def percentile(buckets: dict[float, float], q: float) -> float:
    """Linear interpolation inside the cumulative histogram, as histogram_quantile does."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return bounds[-1]


def worker_env(
    bootstrap: str, db_url: str, topic: str, group: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a benchmarked `cleanup-worker run` (its DLQ is `<topic>.dlq`):
    the settings' defaults but for these, warnings only in its log, and `extra`."""
    settings = Settings(
        database_url=SecretStr(db_url),
        kafka_bootstrap_servers=bootstrap,
        kafka_topics=[topic],
        dlq_topic=f"{topic}.dlq",
        kafka_group_id=group,
    )
    return processes.worker_env(
        settings,
        CLEANUP_HTTP_PORT=str(free_port()),
        **{"CLEANUP_LOG_LEVEL": "warning", **(extra or {})},
    )


class Worker:
    """`cleanup-worker run` as a subprocess, its memory sampled while it lives."""

    def __init__(self, env: dict[str, str], log_path: str) -> None:
        self.env = env
        self.log_path = log_path
        self.port = int(env["CLEANUP_HTTP_PORT"])
        self.peak_rss = 0
        self.rss_now = 0

    async def __aenter__(self) -> Worker:
        # The worker's log goes to --worker-log (or nowhere).
        log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cleanup_worker", "run", env=self.env,
                stdout=asyncio.subprocess.DEVNULL, stderr=log_fd,
            )  # fmt: skip
        finally:
            os.close(log_fd)
        self._sampler = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        proc = psutil.Process(self.process.pid)
        while self.process.returncode is None:
            self.rss_now = proc.memory_info().rss
            self.peak_rss = max(self.peak_rss, self.rss_now)
            await asyncio.sleep(0.1)

    async def __aexit__(self, *_: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        await self.process.wait()
        self._sampler.cancel()


async def wait_for_applied(port: int, target: int, timeout: float) -> tuple[float, float, int]:
    """(time of first progress, time of completion, count at first progress)."""
    deadline = time.monotonic() + timeout
    first: float | None = None
    first_count = 0
    while True:
        try:
            count = await applied_events(port)
        except OSError:  # the HTTP server is not up yet
            count = 0
        now = time.perf_counter()
        if first is None and count > 0:
            first, first_count = now, count
        if count >= target:
            return first or now, now, first_count
        if time.monotonic() > deadline:
            raise SystemExit(f"worker applied only {count} of {target} events in {timeout}s")
        await asyncio.sleep(0.05)


async def steady_lag(bootstrap: str, topic: str, db: Any, port: int, rate: int, secs: int) -> Any:
    users = rate * secs
    await seed_keys(db, users, prefix="lag")
    before = await scrape_lag_buckets(port)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    futures = []
    started = time.perf_counter()
    for i in range(users):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        value = removal(i, datetime.now(UTC), prefix="lag")
        futures.append(await producer.send(topic, value))
    await asyncio.gather(*futures)
    await producer.stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        after = await scrape_lag_buckets(port)
        if after[float("inf")] - before.get(float("inf"), 0) >= users:
            break
        await asyncio.sleep(0.2)
    return {bound: after[bound] - before.get(bound, 0) for bound in after}


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench-removals-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    await admin.close()
    n = args.events
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_consumer") as db_url:
        db = await asyncpg.connect(db_url)
        print(f"seeding {n} users x {KEYS_PER_USER} keys, publishing {n} removals ...")
        await seed_keys(db, n, prefix="u")
        await publish(bootstrap, topic, [removal(u, T_REMOVED) for u in range(n)])

        update_s = await set_based_update(db, n)
        update_rate = n / update_s
        print(f"  set-based UPDATE: {update_s:.2f} s -> {update_rate:,.0f} removals/s")
        await reset(db)

        naive_rate = await naive_consumer(bootstrap, topic, db_url, args.naive_events)
        print(f"  naive consumer:   {naive_rate:,.0f} events/s ({args.naive_events} events)")
        await reset(db)

        extra = dict(item.split("=", 1) for item in args.worker_env)
        env = worker_env(bootstrap, db_url, topic, f"bench-{suffix}", extra)
        async with Worker(env, args.worker_log) as worker:
            cpu_before = psutil.Process(worker.process.pid).cpu_times()
            machine_before = psutil.cpu_times()
            first, last, first_count = await wait_for_applied(worker.port, n, timeout=600)
            worker_rate = (n - first_count) / (last - first)
            cpu_after = psutil.Process(worker.process.pid).cpu_times()
            busy = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
            machine = busy_seconds(psutil.cpu_times()) - busy_seconds(machine_before)
            print(
                f"  CPU while consuming (cores): worker {busy / (last - first):.2f}, "
                f"whole machine {machine / (last - first):.2f} of {psutil.cpu_count()}"
            )
            revoked = await db.fetchval(
                "SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL"
            )
            assert revoked == n * KEYS_PER_USER, revoked
            print(f"  cleanup-worker:   {worker_rate:,.0f} events/s ({n} events, {revoked} keys)")
            lag = await steady_lag(bootstrap, topic, db, worker.port, args.rate, args.seconds)
            steady_rss = worker.rss_now
        await db.close()

    p50, p99 = percentile(lag, 0.50), percentile(lag, 0.99)
    within_25 = lag[0.025] / lag[float("inf")]
    within_50 = lag[0.05] / lag[float("inf")]
    mib = 1024 * 1024
    rows = [
        ("throughput >= 20x naive", f"{worker_rate / naive_rate:.1f}x", worker_rate >= 20 * naive_rate),
        ("throughput >= 80% of set-based UPDATE", f"{worker_rate / update_rate:.0%}",
         worker_rate >= 0.8 * update_rate),
        (f"lag p50 <= 25 ms at {args.rate}/s", f"{p50 * 1000:.0f} ms ({within_25:.1%} <= 25 ms)",
         within_25 >= 0.5),
        (f"lag p99 <= 50 ms at {args.rate}/s", f"{p99 * 1000:.0f} ms ({within_50:.1%} <= 50 ms)",
         within_50 >= 0.99),
        ("worker RSS <= 150 MB", f"peak {worker.peak_rss / mib:.0f} MiB, steady {steady_rss / mib:.0f} MiB",
         worker.peak_rss <= 150 * 1000 * 1000),
    ]  # fmt: skip
    print_targets(rows)


def print_targets(rows: list[tuple[str, str, bool]]) -> None:
    """The verdict table: each target ("Targets", docs/design.md), what was measured, ok or MISSED."""
    print()
    print("target (docs/design.md)                           measured                 verdict")
    for target, measured, ok in rows:
        print(f"{target:<50}{measured:<25}{'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--naive-events", type=int, default=3_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--worker-log", default=os.devnull, help="where the worker's log goes")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="CLEANUP_X=V",
        help="a setting for the worker under test (repeatable)",
    )
    asyncio.run(main(parser.parse_args()))
