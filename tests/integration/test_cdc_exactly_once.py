"""Debezium's exactly-once mode: a distributed Kafka Connect with exactly-once source support
writes the change events in Kafka transactions (commit markers in the topic). The worker
applies the committed events, and its group's committed offsets reach the end of the topic,
markers included (read_committed; control markers never hold the offset back)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cleanup_worker.settings import Settings
from testkit.cdc import cdc_settings, distributed_connect, source_table
from testkit.database import revoked_keys, seed_key
from testkit.kafka import all_committed, end_offsets, read_topic
from testkit.processes import running_worker
from testkit.waiting import eventually


@pytest.mark.timeout(300)
async def test_transactional_change_events_are_applied_and_fully_committed(
    settings: Settings, db: Any
) -> None:
    old = await seed_key(db, "acct", "grace", datetime.now(UTC) - timedelta(hours=1))
    kept = await seed_key(db, "acct", "heidi", datetime.now(UTC) - timedelta(hours=1))
    bootstrap = settings.require_kafka()
    async with (
        distributed_connect(bootstrap) as connect_url,
        source_table(
            settings, connect_url=connect_url, extra={"exactly.once.support": "required"}
        ) as table,
    ):
        await table.execute(
            "INSERT INTO {table} (account_id, iam_id) VALUES ('acct', 'grace'), ('acct', 'heidi')"
        )
        await table.execute("DELETE FROM {table} WHERE iam_id = 'grace'")
        records: list[Any] = []

        async def captured() -> bool:
            records[:] = await read_topic(settings, table.topic)
            return len(records) >= 4  # two inserts, the delete, its tombstone

        await eventually(captured, timeout=60)
        ends = await end_offsets(settings, table.topic)
        # Transactions leave commit markers: the log holds more offsets than records.
        assert sum(ends.values()) > len(records)
        worker = cdc_settings(settings, table.topic)
        async with running_worker(worker):

            async def revoked() -> bool:
                return set(await revoked_keys(db)) == {old}

            await eventually(revoked, timeout=60)
            cdc_only = worker.model_copy(update={"kafka_topics": [table.topic]})

            async def fully_committed() -> bool:
                return await all_committed(cdc_only)

            # Needs the consumer that skips transaction markers (read_committed): otherwise
            # the committed offset stops before the last marker of each partition.
            await eventually(fully_committed, timeout=30)
    assert kept not in await revoked_keys(db)
