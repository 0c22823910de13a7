"""Change-event input benchmark (docs/cdc.md), against the real database, broker, Kafka
Connect and Debezium (`scripts/dev-services up --cdc`):

    .venv/bin/python -m bench.cdc [--rate 50] [--seconds 20] [--backlog 10000]

1. **Removal committed in the source table -> its keys revoked**, at a steady --rate
   removals/s for --seconds: members (5 keys each) are deleted from a captured table, one
   transaction each (half by DELETE, resolved through the remembered row, half by an
   update to the removed state). The figure is the keys' `revoked_at` minus
   `clock_timestamp()` just before the source's COMMIT (same server, same clock).
   `revoked_at` is the start of the worker's transaction, so the figure omits that
   transaction's own few milliseconds.
2. **Throughput on a backlog**: --backlog members inserted then deleted in the source table
   (their change events: inserts, deletes and tombstones), consumed by a fresh worker, against
   the same added/removed history published as structured CloudEvents; events/s from the
   worker's own /metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from bench.consumer import Worker, publish, wait_for_applied, worker_env
from cleanup_worker.settings import Settings
from testkit.cdc import source_table
from testkit.services import scratch_database, service_env

KEYS_PER_USER = 5
CDC = {"CLEANUP_CDC_STATE_COLUMN": "state", "CLEANUP_CDC_REMOVED_STATES": "removed"}


async def seed(db: Any, users: int, prefix: str, created: datetime) -> None:
    await db.execute(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash, created_at) "
        "SELECT gen_random_uuid(), 'acct', $1 || u, md5(u::text || k::text), $2 "
        "FROM generate_series(0, $3 - 1) AS u, generate_series(1, $4) AS k",
        prefix, created, users, KEYS_PER_USER,
    )  # fmt: skip
    await db.execute("ANALYZE api_keys")


async def empty_topic(bootstrap: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 3, 1), NewTopic(f"{name}.dlq", 1, 1)])
    await admin.close()
    return name


def settings_for(env: dict[str, str], db_url: str) -> Settings:
    return Settings(
        database_url=SecretStr(db_url),
        kafka_bootstrap_servers=env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"],
    )


async def latency(env: dict[str, str], args: argparse.Namespace) -> list[float]:
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    users = args.rate * args.seconds
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_cdc") as db_url:
        db = await asyncpg.connect(db_url)
        await seed(db, users, "m", datetime.now(UTC) - timedelta(hours=1))
        rows = [
            f"INSERT INTO {{table}} (account_id, iam_id) SELECT 'acct', 'm' || u FROM generate_series(0, {users - 1}) u"
        ]
        async with source_table(settings_for(env, db_url), rows=rows) as table:
            events = await empty_topic(bootstrap, f"bench-cdc-ce-{uuid.uuid4().hex[:6]}")
            run_env = worker_env(bootstrap, db_url, events, f"bench-cdc-{uuid.uuid4().hex[:6]}",
                                 {**CDC, "CLEANUP_CDC_TOPICS": table.topic})  # fmt: skip
            async with Worker(run_env, args.worker_log) as worker:
                await wait_for_applied(worker.port, users, 120)  # the snapshot
                commits: dict[str, float] = {}
                source = table.source
                started = time.perf_counter()
                for i in range(users):
                    user = f"m{i}"
                    async with source.transaction():
                        if i % 2:
                            await table.execute("DELETE FROM {table} WHERE iam_id = $1", user)
                        else:
                            await table.execute(
                                "UPDATE {table} SET state = 'removed' WHERE iam_id = $1", user
                            )
                        commits[user] = await source.fetchval(
                            "SELECT extract(epoch FROM clock_timestamp())::float8"
                        )
                    pause = started + (i + 1) / args.rate - time.perf_counter()
                    if pause > 0:
                        await asyncio.sleep(pause)
                deadline = time.monotonic() + 60
                while (
                    await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
                    and time.monotonic() < deadline
                ):
                    await asyncio.sleep(0.2)
            revoked = await db.fetch(
                "SELECT iam_id, max(extract(epoch FROM revoked_at))::float8 AS at FROM api_keys GROUP BY iam_id"
            )
        await db.close()
    return [row["at"] - commits[row["iam_id"]] for row in revoked if row["at"] is not None]


async def backlog(env: dict[str, str], args: argparse.Namespace) -> tuple[float, float]:
    bootstrap, n = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"], args.backlog
    created = datetime.now(UTC) - timedelta(hours=1)
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_cdc") as db_url:
        db = await asyncpg.connect(db_url)
        await seed(db, n, "b", created)
        async with source_table(settings_for(env, db_url)) as table:
            await table.execute(
                f"INSERT INTO {{table}} (account_id, iam_id) SELECT 'acct', 'b' || u FROM generate_series(0, {n - 1}) u"
            )
            await table.execute("DELETE FROM {table}")
            await wait_captured(bootstrap, table.topic, 3 * n)
            events = await empty_topic(bootstrap, f"bench-cdc-ce-{uuid.uuid4().hex[:6]}")
            run_env = worker_env(bootstrap, db_url, events, f"bench-cdc-{uuid.uuid4().hex[:6]}",
                                 {**CDC, "CLEANUP_CDC_TOPICS": table.topic})  # fmt: skip
            async with Worker(run_env, args.worker_log) as worker:
                first, done, at_first = await wait_for_applied(worker.port, 2 * n, 300)
            cdc_rate = (2 * n - at_first) / max(done - first, 1e-3)
        await db.close()
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_cdc") as db_url:
        db = await asyncpg.connect(db_url)
        await seed(db, n, "b", created)
        await db.close()
        topic = await empty_topic(bootstrap, f"bench-cdc-ce-{uuid.uuid4().hex[:6]}")
        now = datetime.now(UTC)
        values = [ce("account.member.added", i, now) for i in range(n)]
        values += [ce("account.member.removed", i, now + timedelta(seconds=1)) for i in range(n)]
        await publish(bootstrap, topic, values)
        run_env = worker_env(bootstrap, db_url, topic, f"bench-cdc-{uuid.uuid4().hex[:6]}")
        async with Worker(run_env, args.worker_log) as worker:
            first, done, at_first = await wait_for_applied(worker.port, 2 * n, 300)
        ce_rate = (2 * n - at_first) / max(done - first, 1e-3)
    return cdc_rate, ce_rate


def ce(kind: str, user: int, when: datetime) -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": uuid.uuid4().hex, "source": "/bench", "type": kind,
        "time": when.isoformat(), "data": {"account_id": "acct", "iam_id": f"b{user}"},
    }).encode()  # fmt: skip


async def wait_captured(bootstrap: str, topic: str, records: int) -> None:
    from testkit.kafka import end_offsets  # noqa: PLC0415

    settings = Settings(
        database_url=SecretStr("postgresql://x/y"),
        kafka_bootstrap_servers=bootstrap,
        kafka_topics=[topic],
    )
    deadline = time.monotonic() + 300
    while sum((await end_offsets(settings, topic)).values()) < records:
        if time.monotonic() > deadline:
            raise SystemExit("Debezium did not capture the backlog within 300 s")
        await asyncio.sleep(0.5)


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    lags = sorted(await latency(env, args))
    q = statistics.quantiles(lags, n=100)
    print(f"removal committed -> keys revoked at {args.rate}/s, {len(lags)} removals: "
          f"p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms "
          f"(target p99 <= 1000 ms)")  # fmt: skip
    cdc_rate, ce_rate = await backlog(env, args)
    print(f"backlog of {2 * args.backlog} events: change events {cdc_rate:,.0f} events/s, "
          f"CloudEvents {ce_rate:,.0f} events/s, ratio {cdc_rate / ce_rate:.2f}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--worker-log", default="/dev/null")
    asyncio.run(main(parser.parse_args()))
