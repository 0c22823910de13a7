"""A batch of records sorted by what they turned out to be, and the step that settles its
change events' rows (docs/cdc.md) before the batch is applied."""

from __future__ import annotations

from dataclasses import dataclass, field

from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.adapters.postgres import cdc_rows
from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.adapters.postgres.sqlstate import is_transient
from cleanup_worker.domain.change_events import NeedsRowMemory, RowMember
from cleanup_worker.domain.events import IgnoredEvent, MembershipEvent
from cleanup_worker.retries import Reachability, retrying
from cleanup_worker.service.apply.classify import ChangeEvents, FutureDated, RecordClassifier
from cleanup_worker.service.apply.failure import Failure


@dataclass
class ParsedBatch:
    """Records sorted by what they turned out to be."""

    valid: list[tuple[Record, MembershipEvent]] = field(default_factory=list)
    ignored: list[IgnoredEvent] = field(default_factory=list)
    malformed: list[tuple[Record, Failure]] = field(default_factory=list)
    future: list[tuple[Record, FutureDated]] = field(default_factory=list)
    # Change events (docs/cdc.md): rows to remember, and deletes that need the remembered row.
    remember: list[RowMember] = field(default_factory=list)
    unresolved: list[tuple[Record, NeedsRowMemory]] = field(default_factory=list)

    def add_change(self, record: Record, found: ChangeEvents) -> None:
        for item in found.events:
            if isinstance(item, FutureDated):
                self.future.append((record, item))
            else:
                self.valid.append((record, item))
        if found.row.remember is not None:
            self.remember.append(found.row.remember)


async def settle_rows(
    batch: ParsedBatch,
    pool: Pool,
    classify: RecordClassifier,
    *,
    dry_run: bool,
    retry_max_wait_s: float,
    database: Reachability | None,
) -> None:
    """Remembers the rows the batch's change events named, and resolves the deletes that need
    a remembered row (or makes them dead letters naming the replica identity)."""
    changes = classify.changes
    assert changes is not None
    pending = [(p.change.source, p.change.row_key_text or "") for _, p in batch.unresolved]
    async for attempt in retrying(
        "database.cdc_rows", on=is_transient, wait_max=retry_max_wait_s, reachability=database
    ):
        with attempt:
            async with pool.acquire() as conn:
                # Facts about rows, true whatever becomes of the batch: kept on their own.
                if batch.remember and not dry_run:
                    async with conn.transaction():
                        await cdc_rows.remember(conn, batch.remember)
                remembered = await cdc_rows.recall(conn, pending)
    for (record, needs), key in zip(batch.unresolved, pending, strict=True):
        found = changes.resolved(needs, remembered.get(key))
        if isinstance(found, Failure):
            batch.malformed.append((record, found))
        else:
            batch.add_change(record, classify.dated(found))
    batch.unresolved.clear()
