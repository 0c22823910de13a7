"""The late-key sweep's parts through the real database and broker: its SQL against the pure
rules of domain/late_keys.py, the grants it needs, and R6's guard on real offsets."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from cleanup_worker.adapters.kafka import clients as kafka
from cleanup_worker.adapters.kafka.group_progress import GroupProgress
from cleanup_worker.adapters.postgres import memberships
from cleanup_worker.bootstrap.key_table import install_key_table_from
from cleanup_worker.domain.late_keys import late_key_removal, recheck_removal
from cleanup_worker.domain.rules import derive_membership
from cleanup_worker.service.run.late_keys import LateKeySweeper, Swept
from cleanup_worker.settings import Settings
from testkit.database import revoked_keys, seed_key
from testkit.events import at
from testkit.kafka import publisher
from testkit.key_tables import member


def now() -> datetime:
    return datetime.now(UTC)


async def _seed_random_state(db: Any, seed: int) -> list[tuple[Any, str, str, datetime]]:
    """A random ledger, membership rows derived from it (some with a baseline) and keys."""
    rng = random.Random(seed)
    members = [member("acct", f"u{i}") for i in range(5)]
    for i in range(25):
        account, iam = rng.choice(members)
        change = rng.choice(["added", "removed"])
        await db.execute(
            "INSERT INTO membership_events (source, event_id, account_id, iam_id, change, "
            "event_time, event_type) VALUES ('/s', $1, $2, $3, $4, $5, 'x')",
            f"e{i}",
            account,
            iam,
            change,
            at(rng.randrange(0, 10)),
        )
    for account, iam in members:
        if rng.random() < 0.3:
            await db.execute(
                "INSERT INTO membership_baselines VALUES ($1, $2, $3, NULL, $4, now())",
                account,
                iam,
                rng.choice(["active", "removed"]),
                at(rng.randrange(0, 10)),
            )
        baselines, histories = await memberships.load_histories(db, [(account, iam)])
        row = derive_membership(baselines.get((account, iam)), histories[(account, iam)])
        if row is not None:
            await db.execute(
                "INSERT INTO account_memberships VALUES ($1, $2, $3, $4, $5)",
                account,
                iam,
                row.state.value,
                row.member_since,
                row.changed_at,
            )
    keys = []
    for _ in range(40):
        account, iam = rng.choice(members)
        created = at(rng.randrange(-1, 11) + rng.choice([0, 0.5]))
        keys.append((await seed_key(db, account, iam, created), account, iam, created))
    return keys


async def _expected(db: Any, keys: list[tuple[Any, str, str, datetime]]) -> dict[Any, Any]:
    expected = {}
    for key_id, account, iam, created in keys:
        baselines, histories = await memberships.load_histories(db, [(account, iam)])
        history = histories[(account, iam)]
        removal = recheck_removal(created, False, history)
        if removal is not None:
            expected[key_id] = ("member_removed", f"event:{removal.source}#{removal.event_id}")
            continue
        late = late_key_removal(created, False, baselines.get((account, iam)), history)
        if late is not None:
            expected[key_id] = ("orphaned", f"event:{late.source}#{late.event_id}")
    return expected


@pytest.mark.parametrize(
    ("seed", "key_shape"),
    [(1, "native"), (2, "native"), (3, "billing"), (4, "keyring")],
    indirect=["key_shape"],
)
async def test_sweep_sql_decides_as_the_pure_rules(
    settings: Settings, db: Any, database_url: str, seed: int
) -> None:
    """On a random ledger and keys, in our table or a mapped one, one sweep (settle 0, the
    group idle) revokes exactly what domain.late_keys says, with the same reason and
    revoked_by."""
    print(f"seed={seed}")
    keys = await _seed_random_state(db, seed)
    await db.execute("UPDATE late_key_sweep SET window_start = $1, horizon = $1", at(-60))
    expected = await _expected(db, keys)
    swept = await _sweep_once(settings, database_url)
    assert swept is not None
    assert await revoked_keys(db) == expected
    assert len(swept.rechecked) + len(swept.late) == len(expected)


async def _sweep_once(
    settings: Settings, database_url: str, server_settings: dict[str, str] | None = None
) -> Swept | None:
    """One sweep with R6 (settle 0) against the test's group, as the worker would run it."""
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings=server_settings
    )
    await install_key_table_from(pool, settings)  # as the program does at start
    consumer = kafka.standalone_consumer(settings)
    admin = AIOKafkaAdminClient(**kafka.client_options(settings))
    await consumer.start()
    await admin.start()
    try:
        progress = GroupProgress(consumer, admin, settings.kafka_group_id, settings.kafka_topics)
        sweeper = LateKeySweeper(
            pool, progress=progress, settle_s=0, interval_s=0.5, retry_max_wait_s=0.5
        )
        return await sweeper.sweep()
    finally:
        await admin.close()
        await consumer.stop()
        await pool.close()


async def test_sweep_needs_only_the_worker_roles_grants(
    settings: Settings, db: Any, database_url: str
) -> None:
    """Run as the least-privilege role cleanup_worker, a sweep re-checks and revokes late
    keys (pg_locks and pg_stat_activity need no privilege)."""
    await db.execute("UPDATE late_key_sweep SET window_start = $1, horizon = $1", at(-60))
    await db.execute(
        "INSERT INTO membership_events (source, event_id, account_id, iam_id, change, "
        "event_time, event_type) VALUES ('/s', 'r', 'acct', 'alice', 'removed', $1, 'x')",
        at(5),
    )
    await db.execute(
        "INSERT INTO account_memberships VALUES ('acct', 'alice', 'removed', NULL, $1)", at(5)
    )
    concurrent = await seed_key(db, "acct", "alice", at(4))
    late = await seed_key(db, "acct", "alice", at(6))
    swept = await _sweep_once(settings, database_url, {"role": "cleanup_worker"})
    assert swept is not None
    assert await revoked_keys(db) == {
        concurrent: ("member_removed", "event:/s#r"),
        late: ("orphaned", "event:/s#r"),
    }


async def test_group_progress_counts_every_partition_of_the_group(settings: Settings) -> None:
    """R6's guard: the latest cutoff before which the group committed past every record, on
    every partition (one that lags holds it back, an empty one does not)."""
    base = int(now().timestamp() * 1000) - 3_600_000
    topic = settings.kafka_topics[0]
    async with publisher(settings) as pub:
        for partition, offsets in ((0, (1000, 2000, 3000)), (1, (1500,))):
            for ts in offsets:
                await pub.producer.send_and_wait(
                    topic, b"x", partition=partition, timestamp_ms=base + ts
                )
    committer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.kafka_group_id,
        enable_auto_commit=False,
    )
    await committer.start()
    consumer = kafka.standalone_consumer(settings)
    admin = AIOKafkaAdminClient(**kafka.client_options(settings))
    await consumer.start()
    await admin.start()
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    committer.assign([p0, p1])
    cutoffs = [datetime.fromtimestamp((base + ms) / 1000, UTC) for ms in (1500, 1600, 2500, 3500)]
    try:
        progress = GroupProgress(consumer, admin, settings.kafka_group_id, [topic])
        assert await progress.consumed_before(cutoffs) is None  # nothing committed yet
        await committer.commit({p0: 2, p1: 0})
        assert await progress.consumed_before(cutoffs) == cutoffs[0]  # p1 holds 1600 back
        await committer.commit({p0: 2, p1: 1})
        assert await progress.consumed_before(cutoffs) == cutoffs[2]  # p0 holds 3500 back
    finally:
        await admin.close()
        await consumer.stop()
        await committer.stop()
