"""SQL for the record of redriven dead letters (`dlq_redrives`, migration 0005)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.adapters.postgres.locks import REDRIVE_LOCK_KEY
from cleanup_worker.domain.events import Origin
from cleanup_worker.errors import AlreadyRunning

# One `dlq redrive --execute` at a time per database (a second one would only repeat work).


@dataclass(frozen=True, slots=True)
class Redriven:
    """A dead letter that a redrive applied (or found already applied)."""

    fingerprint: str
    outcome: str
    at: datetime


_LOAD = """
SELECT dlq_partition, dlq_offset, fingerprint, outcome, redriven_at
FROM dlq_redrives WHERE dlq_topic = $1
"""


async def load(pool: Pool, dlq_topic: str) -> dict[tuple[int, int], Redriven]:
    """What was redriven from this topic, by (partition, offset)."""
    rows = await pool.fetch(_LOAD, dlq_topic)
    return {
        (row["dlq_partition"], row["dlq_offset"]): Redriven(
            row["fingerprint"], row["outcome"], row["redriven_at"]
        )
        for row in rows
    }


_RECORD = """
INSERT INTO dlq_redrives (dlq_topic, dlq_partition, dlq_offset, fingerprint, original_topic,
                          original_partition, original_offset, event_source, event_id, outcome)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (dlq_topic, dlq_partition, dlq_offset) DO UPDATE
SET fingerprint = EXCLUDED.fingerprint, original_topic = EXCLUDED.original_topic,
    original_partition = EXCLUDED.original_partition,
    original_offset = EXCLUDED.original_offset, event_source = EXCLUDED.event_source,
    event_id = EXCLUDED.event_id, outcome = EXCLUDED.outcome, redriven_at = now()
"""


async def record(
    pool: Pool,
    *,
    dlq: Origin,
    fingerprint: str,
    original: Origin,
    event: tuple[str, str],
    outcome: str,
) -> None:
    """Notes one dead letter as redriven (after the handler committed its effects)."""
    await pool.execute(
        _RECORD,
        *(dlq.topic, dlq.partition, dlq.offset),
        fingerprint,
        *(original.topic, original.partition, original.offset),
        *event,
        outcome,
    )


@asynccontextmanager
async def exclusive(pool: Pool) -> AsyncIterator[None]:
    """Holds the redrive lock for the block; raises AlreadyRunning if someone else has it."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", REDRIVE_LOCK_KEY):
            raise AlreadyRunning("another `dlq redrive --execute` is running on this database")
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", REDRIVE_LOCK_KEY)
