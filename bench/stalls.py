"""Where the slowest removals of a steady stream lost their time, and when ("Targets",
docs/design.md: revocation lag and notice lag at 500 events/s).

    .venv/bin/python -m bench.stalls [--rate 500] [--seconds 20] [--notices on|off] [--idle-s 0]
                                     [--env CLEANUP_X=VALUE ...]

One `cleanup-worker run` on a scratch database and a topic of its own, a steady stream of
removals (5 keys each). Afterwards, for every event, from the ledger and the notices topic:

- event time -> the record's Kafka timestamp (the producer and the broker);
- event time -> the start of the transaction that applied it (`applied_at`: fetching,
  queueing behind other batches, the worker's event loop);
- event time -> the last of its notices built by the relay (the notice record's timestamp);

their percentiles, and the 100 ms windows of the stream in which any event waited more than
`--slow-ms` for its transaction or its notice: a tail made of one stall shows up as a few
adjacent windows, a spread-out tail as many scattered ones. `--idle-s` lets the worker sit
idle after it is ready, before the stream starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import uuid
from collections import defaultdict
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from bench.consumer import (
    KEYS_PER_USER,
    PARTITIONS,
    Worker,
    percentile,
    steady_lag,
    worker_env,
)
from bench.notices import notice_lag_of
from bench.report import percentile as nearest_rank
from cleanup_worker.settings import Settings
from testkit.kafka import read_topic
from testkit.processes import until_ready
from testkit.services import scratch_database, service_env

WINDOW_S = 0.1


@dataclass(frozen=True)
class Timeline:
    """One event's delays after its event time, in seconds (NaN: no notice read)."""

    at: float  # event time, seconds since the epoch
    kafka: float
    transaction: float
    notice: float


@dataclass(frozen=True)
class WalSample:
    """The cluster's WAL counters (pg_stat_wal) at one moment."""

    at: float  # seconds since the epoch
    records: int
    fpi: int  # full-page images: a page's first change after a checkpoint
    bytes: int


async def sample_wal(db_url: str, into: list[WalSample]) -> None:
    """pg_stat_wal every WINDOW_S until cancelled, on a connection of its own."""
    conn = await asyncpg.connect(db_url)
    try:
        while True:
            row = await conn.fetchrow(
                "SELECT extract(epoch FROM clock_timestamp())::float8 AS at, wal_records, "
                "wal_fpi, wal_bytes::int8 AS wal_bytes FROM pg_stat_wal"
            )
            assert row is not None
            into.append(WalSample(row["at"], row["wal_records"], row["wal_fpi"], row["wal_bytes"]))
            await asyncio.sleep(WINDOW_S)
    finally:
        await conn.close()


async def run(
    args: argparse.Namespace,
) -> tuple[list[Timeline], dict[str, float], list[WalSample]]:
    env = service_env()
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    topic = f"bench-stalls-{uuid.uuid4().hex[:8]}"
    notices = f"{topic}.revoked"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [NewTopic(topic, PARTITIONS, 1), NewTopic(f"{topic}.dlq", 1, 1)]
        if args.notices == "on":
            topics.append(NewTopic(notices, PARTITIONS, 1))
        await admin.create_topics(topics)
    finally:
        await admin.close()
    extra = dict(setting.split("=", 1) for setting in args.env)
    if args.notices == "on":
        extra["CLEANUP_REVOCATIONS_TOPIC"] = notices
    async with scratch_database(env["CLEANUP_DATABASE_URL"], "bench_stalls") as db_url:
        db = await asyncpg.connect(db_url)
        try:
            async with Worker(worker_env(bootstrap, db_url, topic, topic, extra), "/dev/null") as w:
                await until_ready([w.port])
                await asyncio.sleep(args.idle_s)
                wal: list[WalSample] = []
                sampling = asyncio.create_task(sample_wal(db_url, wal))
                try:
                    lag = await steady_lag(bootstrap, topic, db, w.port, args.rate, args.seconds)
                finally:
                    sampling.cancel()
                    with suppress(asyncio.CancelledError):
                        await sampling
                notice_lag: dict[float, float] = {}
                if args.notices == "on":
                    expected = args.rate * args.seconds * KEYS_PER_USER
                    notice_lag = await notice_lag_of(w.port, expected)
            rows = await db.fetch(
                "SELECT event_id, extract(epoch FROM event_time)::float8 AS e, "
                "extract(epoch FROM kafka_timestamp)::float8 AS k, "
                "extract(epoch FROM applied_at)::float8 AS a FROM membership_events"
            )
        finally:
            await db.close()
    built: dict[str, float] = {}
    if args.notices == "on":
        settings = Settings(database_url=SecretStr(db_url), kafka_bootstrap_servers=bootstrap)
        for record in await read_topic(settings, notices):
            event_id = json.loads(record.value)["data"]["revoked_by"].split("#", 1)[1]
            built[event_id] = max(built.get(event_id, 0.0), record.timestamp / 1000)
    timelines = [
        Timeline(r["e"], r["k"] - r["e"], r["a"] - r["e"], built.get(r["event_id"], math.nan) - r["e"])
        for r in rows
    ]  # fmt: skip
    summary = {"commit p50": percentile(lag, 0.5), "commit p99": percentile(lag, 0.99)}
    if notice_lag:
        summary |= {
            "notice acked p50": percentile(notice_lag, 0.5),
            "notice acked p99": percentile(notice_lag, 0.99),
        }
    return sorted(timelines, key=lambda t: t.at), summary, wal


def wal_between(wal: list[WalSample], start: float, end: float) -> tuple[int, int]:
    """(full-page images, KiB) written between two moments, from the samples around them."""
    before = [w for w in wal if w.at <= start]
    after = [w for w in wal if w.at >= end]
    if not before or not after:
        return 0, 0
    return after[0].fpi - before[-1].fpi, (after[0].bytes - before[-1].bytes) // 1024


def report(
    timelines: list[Timeline], summary: dict[str, float], wal: list[WalSample], slow_ms: float
) -> None:
    for name, seconds in summary.items():
        print(f"{name:<19} {seconds * 1000:6.0f} ms   (the worker's histogram)")
    print(f"\n{'event time ->':<19} {'p50':>6} {'p90':>6} {'p99':>6} {'max':>6}  ms")
    for name in ("kafka", "transaction", "notice"):
        values = [getattr(t, name) for t in timelines if not math.isnan(getattr(t, name))]
        if values:
            row = " ".join(f"{nearest_rank(values, q) * 1000:6.1f}" for q in (0.5, 0.9, 0.99, 1.0))
            print(f"{name:<19} {row}")
    windows: dict[int, list[Timeline]] = defaultdict(list)
    for t in timelines:
        windows[int((t.at - timelines[0].at) / WINDOW_S)].append(t)
    origin = timelines[0].at
    print(f"\nthe stream's first event: {datetime.fromtimestamp(origin, UTC):%H:%M:%S.%f} UTC")
    fpi, kib = wal_between(wal, origin + 2, origin + 2 + 10 * WINDOW_S)
    print(f"\nWAL in a second of the stream from 2 s on: {fpi} full-page images, {kib} KiB")
    slow = []
    for index, events in sorted(windows.items()):
        worst_txn = max(t.transaction for t in events) * 1000
        worst_notice = max((t.notice for t in events if not math.isnan(t.notice)), default=0) * 1000
        if max(worst_txn, worst_notice) > slow_ms:
            start = origin + index * WINDOW_S
            fpi, kib = wal_between(wal, start, start + WINDOW_S)
            slow.append((index * WINDOW_S, len(events), worst_txn, worst_notice, fpi, kib))
    print(f"100 ms windows with an event over {slow_ms:g} ms: {len(slow)} of {len(windows)}")
    for start, count, worst_txn, worst_notice, fpi, kib in slow:
        print(
            f"  from {start:5.1f} s: {count:3d} events, worst transaction {worst_txn:4.0f} ms,"
            f" worst notice {worst_notice:4.0f} ms; WAL {fpi} full-page images, {kib} KiB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--notices", choices=("on", "off"), default="on")
    parser.add_argument("--idle-s", type=float, default=0.0)
    parser.add_argument("--slow-ms", type=float, default=80.0)
    parser.add_argument(
        "--env", action="append", default=[], metavar="CLEANUP_X=VALUE",
        help="a setting for the worker (repeat for more)",
    )  # fmt: skip
    args = parser.parse_args()
    timelines, summary, wal = asyncio.run(run(args))
    report(timelines, summary, wal, args.slow_ms)


if __name__ == "__main__":
    main()
