"""Our own api_keys against a mapped key table, in one run, alternating ("Targets",
docs/design.md; docs/key-table.md). The target: the mapped table within 10 % of ours.

    .venv/bin/python -m bench.key_table [--events 20000] [--backfill-keys 200000] [--trials 2]
                                        [--shape billing|keyring]

Each trial measures both tables, in alternating order, each in a scratch database (the
mapped one created by its owner role, with the SQL `migrate --print-key-table-sql` prints):

1. consumer: N users with 5 keys each, N removals on a 6-partition topic, `cleanup-worker
   run` as a process; events/s from its first applied event to its last (its own counter);
2. backfill: K keys of K/5 users, a tenth of them without a membership row (orphaned),
   `cleanup-worker backfill --execute`; revoked keys per second (its own summary).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import uuid
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.consumer import (
    KEYS_PER_USER,
    PARTITIONS,
    T_KEYS,
    T_REMOVED,
    Worker,
    publish,
    wait_for_applied,
    worker_env,
)
from testkit import key_rows
from testkit.key_tables import NATIVE, SHAPES, KeyTableShape, activate, quote
from testkit.services import scratch_database, service_env

ACCOUNTS = 1000


def _sql_value(kind: str, text: str, number: str) -> str:
    """A member's value in SQL from the series `u`, as `_value` makes it in Python."""
    return {"text": text, "uuid": f"md5({text})::uuid", "bigint": f"({number})::bigint"}[kind]


def _value(kind: str, text: str, number: int) -> str:
    if kind == "uuid":
        return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))
    return str(number) if kind == "bigint" else text


def member(shape: KeyTableShape, u: int) -> tuple[str, str]:
    a = u % ACCOUNTS
    return _value(shape.account.type, f"acct-{a}", a), _value(shape.user.type, f"u{u}", u)


async def seed(db: Any, shape: KeyTableShape, users: int, *, orphaned_every: int = 0) -> None:
    """`users` x 5 keys in the table; membership rows for all users but every
    `orphaned_every`-th (0: no membership rows at all)."""
    account = _sql_value(shape.account.type, "'acct-' || (u % 1000)", "u % 1000")
    user = _sql_value(shape.user.type, "'u' || u", "u")
    extra = shape.extra_insert
    columns = [shape.account.sql, shape.user.sql, quote(shape.created), *map(quote, extra)]
    values = [account, user, "$1", *extra.values()]
    await db.execute(
        f"INSERT INTO {shape.qualified} ({', '.join(columns)}) SELECT {', '.join(values)} "
        "FROM generate_series(0, $2 - 1) AS u, generate_series(1, $3) AS k",
        T_KEYS,
        users,
        KEYS_PER_USER,
    )
    if orphaned_every:
        await db.execute(
            "INSERT INTO account_memberships (account_id, iam_id, state, changed_at) "
            f"SELECT ({account})::text, ({user})::text, 'active', $1 "
            "FROM generate_series(0, $2 - 1) AS u WHERE u % $3 <> 0",
            T_KEYS,
            users,
            orphaned_every,
        )
    await db.execute(f"VACUUM ANALYZE {shape.qualified}")


def removal(shape: KeyTableShape, u: int) -> bytes:
    account, user = member(shape, u)
    return json.dumps(
        {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/bench",
            "type": "account.member.removed",
            "time": T_REMOVED.isoformat(),
            "data": {"account_id": account, "iam_id": user},
        }
    ).encode()


async def prepared(url: str, shape: KeyTableShape) -> Any:
    """A connection to `url`, the shape's table created and readied by its owner."""
    activate(shape)
    db = await asyncpg.connect(url)
    await key_rows.install(db, shape, url)
    return db


async def consumer_rate(admin_url: str, bootstrap: str, shape: KeyTableShape, n: int) -> float:
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench-keytable-{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    await admin.close()
    async with scratch_database(admin_url, "bench_keytable") as url:
        db = await prepared(url, shape)
        try:
            await seed(db, shape, n)
            await publish(bootstrap, topic, [removal(shape, u) for u in range(n)])
            env = worker_env(bootstrap, url, topic, f"bench-{suffix}", shape.env())
            async with Worker(env, os.devnull) as worker:
                first, last, first_count = await wait_for_applied(worker.port, n, timeout=600)
            live = await key_rows.live_count(db)
            assert live == 0, f"{shape.name}: {live} keys still live"
        finally:
            await db.close()
    return (n - first_count) / (last - first)


async def backfill_rate(admin_url: str, shape: KeyTableShape, keys: int) -> float:
    async with scratch_database(admin_url, "bench_keytable") as url:
        db = await prepared(url, shape)
        try:
            await seed(db, shape, keys // KEYS_PER_USER, orphaned_every=10)
        finally:
            await db.close()
        env = {**os.environ, "CLEANUP_DATABASE_URL": url, "CLEANUP_LOG_LEVEL": "warning",
               **shape.env()}  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cleanup_worker", "backfill", "--execute", "--max-fraction",
            "1", "--json", env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = await process.communicate()
        assert process.returncode == 0, f"{shape.name}: backfill exited {process.returncode}"
        summary = json.loads(out)
        revoked = summary["examined"] - summary["kept_at_write_time"]
        assert revoked == keys // 10, f"{shape.name}: revoked {revoked}"
        return float(summary["keys_revoked_per_second"])


async def main(args: argparse.Namespace) -> None:
    env = service_env()
    admin_url, bootstrap = env["CLEANUP_DATABASE_URL"], env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    mapped = SHAPES[args.shape]
    figures: dict[str, dict[str, list[float]]] = {"consumer": {}, "backfill": {}}
    for trial in range(args.trials):
        order = [NATIVE, mapped] if trial % 2 == 0 else [mapped, NATIVE]
        for shape in order:
            rate = await consumer_rate(admin_url, bootstrap, shape, args.events)
            figures["consumer"].setdefault(shape.name, []).append(rate)
            print(f"trial {trial + 1} consumer {shape.name}: {rate:,.0f} events/s", flush=True)
            rate = await backfill_rate(admin_url, shape, args.backfill_keys)
            figures["backfill"].setdefault(shape.name, []).append(rate)
            print(f"trial {trial + 1} backfill {shape.name}: {rate:,.0f} keys/s", flush=True)
    for what, unit in (("consumer", "events/s"), ("backfill", "revoked keys/s")):
        ours = statistics.median(figures[what][NATIVE.name])
        theirs = statistics.median(figures[what][mapped.name])
        print(
            f"{what}: api_keys {ours:,.0f} {unit}, {mapped.name} {theirs:,.0f} {unit} "
            f"(median of {args.trials}): mapped/native {theirs / ours:.2f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--backfill-keys", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--shape", choices=[s for s in SHAPES if s != NATIVE.name],
                        default="billing")  # fmt: skip
    asyncio.run(main(parser.parse_args()))
