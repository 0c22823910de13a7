"""Exposure after an outage ("Targets", docs/design.md; issue 14): how long after PostgreSQL or Kafka comes
back are the removals that arrived meanwhile applied?

    .venv/bin/python -m bench.outage [--rate 50] [--durations 5,20,60]
        [--services postgres,kafka] [--policies before,after]

`cleanup-worker run` (a real process, default settings) reaches both services through
Toxiproxy (testkit/toxiproxy.py); the benchmark publishes removals straight to the
broker at a steady rate, and for each service and duration disables the worker's proxy to it
(connections closed, new ones refused: the service is gone as far as the worker can tell),
enables it again, and reports, for the removals whose event time fell inside the outage, the
delay from the proxy's return to the key's `revoked_at` (min, p50, p99, max), and how many
connection attempts the worker made per second while it was down (its probes, plus the
retries its hook counted).

Policies: `after` is the worker as configured by default (a probe wakes the retries,
`CLEANUP_OUTAGE_PROBE_INTERVAL_S=0.5`); `before` is the policy before issue 14
(`CLEANUP_OUTAGE_PROBE_INTERVAL_S=0`: exponential backoff up to `CLEANUP_RETRY_MAX_WAIT_S`,
10 s). Each policy runs its own worker in its own consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from cleanup_worker.settings import Settings
from testkit.metrics import Scrape, scrape
from testkit.processes import free_port, worker_env
from testkit.services import ROOT, scratch_database, service_env
from testkit.toxiproxy import (
    Link,
    database_address,
    kafka_proxy_addresses,
    through,
    toxiproxy_process,
)

T_KEYS = datetime(2026, 1, 1, tzinfo=UTC)
PROBE_INTERVAL = {"before": "0", "after": "0.5"}
# aiokafka's own pause between reconnects: its default before issue 14, ours after.
POLICY_ENV = {"before": {"CLEANUP_KAFKA_RETRY_BACKOFF_MS": "100"}, "after": {}}


@dataclass
class Result:
    policy: str
    service: str
    outage_s: float
    removals: int
    delays: list[float]
    attempts_per_s: float

    def row(self) -> dict[str, Any]:
        d = sorted(self.delays)
        return {
            "policy": self.policy,
            "service": self.service,
            "outage_s": self.outage_s,
            "removals": self.removals,
            "applied": len(d),
            "min_s": round(d[0], 3) if d else None,
            "p50_s": round(statistics.median(d), 3) if d else None,
            "p99_s": round(d[min(len(d) - 1, int(len(d) * 0.99))], 3) if d else None,
            "max_s": round(d[-1], 3) if d else None,
            "attempts_per_s": round(self.attempts_per_s, 2),
        }


class Stream:
    """Removals at a steady rate, each for a user of its own with one key; remembers when
    each was sent (its CloudEvent time)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, rate: float, prefix: str):
        self.producer, self.topic, self.rate, self.prefix = producer, topic, rate, prefix
        self.sent: dict[str, float] = {}  # iam_id -> event time (epoch s)
        self.next_user = 0

    async def run(self, users: int) -> None:
        start = time.monotonic()
        while self.next_user < users:
            due = start + self.next_user / self.rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            iam_id = f"{self.prefix}{self.next_user}"
            now = time.time()
            value = json.dumps(
                {
                    "specversion": "1.0",
                    "id": uuid.uuid4().hex,
                    "source": "/bench-outage",
                    "type": "account.member.removed",
                    "time": datetime.fromtimestamp(now, UTC).isoformat(),
                    "data": {"account_id": "acct", "iam_id": iam_id},
                }
            ).encode()
            await self.producer.send(self.topic, value=value, key=iam_id.encode())
            self.sent[iam_id] = now
            self.next_user += 1
        raise SystemExit("the stream ran out of seeded users; raise the seed count")


def attempts(samples: Scrape) -> float:
    """Connection attempts the worker counted: its probes and its retries."""
    return samples.total("cleanup_outage_probes_total") + samples.total("cleanup_retries_total")


# What the client libraries log for each connection attempt they make on their own:
# aiokafka's reconnects, asyncpg's pool refilling its minimum size.
LIBRARY_ATTEMPTS = (b"Unable connect to node", b"Failed to restore the pool connection floor")


class WorkerLog:
    """The worker's stderr, read from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def library_attempts(self) -> int:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        return sum(chunk.count(marker) for marker in LIBRARY_ATTEMPTS)


async def ready(port: int, timeout: float = 90) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{port}/readyz") as response,
                ):
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def revoked_at(db: Any, users: list[str]) -> dict[str, float]:
    rows = await db.fetch(
        "SELECT iam_id, extract(epoch FROM revoked_at)::float8 AS at FROM api_keys "
        "WHERE iam_id = ANY($1) AND revoked_at IS NOT NULL",
        users,
    )
    return {r["iam_id"]: r["at"] for r in rows}


async def outage(
    policy: str,
    service: str,
    link: Link,
    seconds: float,
    stream: Stream,
    db: Any,
    metrics_port: int,
    log: WorkerLog,
) -> Result:
    before = attempts(await scrape(metrics_port))
    log.library_attempts()
    down_at = time.time()
    await link.set_enabled(False)
    await asyncio.sleep(seconds)
    during = attempts(await scrape(metrics_port)) - before + log.library_attempts()
    await link.set_enabled(True)
    up_at = time.time()
    window = [u for u, t in stream.sent.items() if down_at <= t < up_at]
    async with asyncio.timeout(180):
        while len(done := await revoked_at(db, window)) < len(window):
            await asyncio.sleep(0.2)
    delays = [done[u] - up_at for u in window]
    result = Result(policy, service, seconds, len(window), delays, during / seconds)
    print(json.dumps(result.row()), flush=True)
    return result


async def run_policy(
    policy: str,
    args: argparse.Namespace,
    env: dict[str, str],
    links: dict[str, Link],
    db_url: str,
    topics: tuple[str, str],
) -> list[Result]:
    metrics_port = free_port()
    settings = Settings(
        database_url=SecretStr(through(db_url, links["postgres"].listen)),
        kafka_bootstrap_servers=links["kafka"].listen,
        kafka_topics=[topics[0]],
        dlq_topic=topics[1],
        kafka_group_id=f"bench-outage-{policy}-{uuid.uuid4().hex[:6]}",
    )
    env = worker_env(
        settings,
        CLEANUP_HTTP_PORT=str(metrics_port),
        CLEANUP_OUTAGE_PROBE_INTERVAL_S=PROBE_INTERVAL[policy],
        **POLICY_ENV[policy],
    )
    log_path = ROOT / ".dev" / "log" / f"bench-outage-{policy}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as stderr:  # noqa: ASYNC230 - once, before anything runs
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cleanup_worker", "run", env=env, stderr=stderr
        )
    log = WorkerLog(log_path)
    db = await asyncpg.connect(db_url)
    producer = AIOKafkaProducer(
        bootstrap_servers=env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"], acks="all", linger_ms=0
    )
    await producer.start()
    stream = Stream(producer, topics[0], args.rate, f"{policy}-")
    streaming: asyncio.Task[None] | None = None
    results = []
    try:
        await ready(metrics_port)
        streaming = asyncio.create_task(stream.run(args.users))
        for service in args.services:
            for seconds in args.durations:
                await asyncio.sleep(args.steady)
                results.append(
                    await outage(
                        policy, service, links[service], seconds, stream, db, metrics_port, log
                    )
                )
    finally:
        if streaming is not None:
            streaming.cancel()
        await asyncio.gather(*(t for t in [streaming] if t), return_exceptions=True)
        await producer.stop()
        await db.close()
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), 60)
    return results


async def seed(db_url: str, users: int) -> None:
    db = await asyncpg.connect(db_url)
    try:
        for policy in PROBE_INTERVAL:
            await db.execute(
                "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at) "
                "SELECT gen_random_uuid(), 'acct', $1 || u, md5(u::text), $2 "
                "FROM generate_series(0, $3 - 1) AS u",
                f"{policy}-",
                T_KEYS - timedelta(days=1),
                users,
            )
        await db.execute("VACUUM ANALYZE api_keys")
    finally:
        await db.close()


async def create_topics(bootstrap: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    events, dlq = f"bench-outage-{suffix}", f"bench-outage-dlq-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(events, 6, 1), NewTopic(dlq, 1, 1)])
    finally:
        await admin.close()
    return events, dlq


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    total_s = len(args.services) * sum(d + args.steady for d in args.durations)
    args.users = int(args.rate * (total_s + 60) * 1.5)
    proxy_listen, proxied = kafka_proxy_addresses(env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"])
    log_path = ROOT / ".dev" / "log" / "bench-outage-toxiproxy.log"
    with toxiproxy_process(log_path) as api:
        links = {
            "postgres": await api.proxy(
                "postgres", "127.0.0.1:0", database_address(env["CLEANUP_DATABASE_URL"])
            ),
            "kafka": await api.proxy("kafka", proxy_listen, proxied),
        }
        async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_outage") as db_url:
            await seed(db_url, args.users)
            results: list[Result] = []
            for policy in args.policies:
                topics = await create_topics(env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"])
                results += await run_policy(policy, args, env, links, db_url, topics)
    print()
    print(
        f"{'policy':8} {'service':9} {'outage':>7} {'removals':>8} {'min':>7} {'p50':>7} "
        f"{'p99':>7} {'max':>7} {'attempts/s':>10}"
    )
    for r in (result.row() for result in results):
        print(
            f"{r['policy']:8} {r['service']:9} {r['outage_s']:>6g}s {r['removals']:>8} "
            f"{r['min_s']:>7} {r['p50_s']:>7} {r['p99_s']:>7} {r['max_s']:>7} "
            f"{r['attempts_per_s']:>10}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="removals per second")
    parser.add_argument("--durations", default="5,20,60", help="outage lengths in seconds")
    parser.add_argument("--services", default="postgres,kafka")
    parser.add_argument("--policies", default="before,after")
    parser.add_argument("--steady", type=float, default=8.0, help="seconds between outages")
    args = parser.parse_args()
    args.durations = [float(d) for d in args.durations.split(",")]
    args.services = args.services.split(",")
    args.policies = args.policies.split(",")
    assert set(args.services) <= {"postgres", "kafka"}
    assert set(args.policies) <= set(PROBE_INTERVAL)
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
