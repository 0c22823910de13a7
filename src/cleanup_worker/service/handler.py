"""The one path by which records become effects: parse, dead-letter, apply a batch in one
transaction. `run`, `replay` and `dlq redrive` all go through `BatchHandler.handle`."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import stamina

from cleanup_worker.adapters import keys
from cleanup_worker.adapters.cloudevents import parse_record
from cleanup_worker.adapters.dlq import Failure
from cleanup_worker.adapters.kafka import Record
from cleanup_worker.adapters.postgres import is_transient
from cleanup_worker.domain.events import Change, EventTypes, IgnoredEvent, MembershipEvent
from cleanup_worker.domain.rules import unique_events
from cleanup_worker.errors import MalformedEvent
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.service.batch_transaction import apply_events

log = get_logger(__name__)

# Data-dependent failures: this event cannot be stored, but its neighbours can. A statement
# timeout (57014) is treated alike: the batch is split until the event that is too costly on
# its own (say, a removal of a member with millions of keys) stands alone and is
# dead-lettered, instead of blocking its partition. Anything else that is not transient
# (permissions, a missing table) is a deployment fault and must stop us.
_PER_EVENT_SQLSTATE_CLASSES = ("22", "23", "57014")


class DeadLetterSink(Protocol):
    async def publish(self, record: Record, failure: Failure) -> None: ...


@dataclass
class BatchOutcome:
    """What one batch did; counted for logs, metrics and command summaries."""

    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    malformed: int = 0  # of dead_lettered: not a valid event
    rejected: int = 0  # of dead_lettered: a valid event the database refused on its own
    keys_revoked: int = 0
    memberships_changed: int = 0
    by_type: Counter[tuple[str, str]] = field(default_factory=Counter)
    removal_times: list[datetime] = field(default_factory=list)

    def add(self, other: BatchOutcome) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.ignored += other.ignored
        self.dead_lettered += other.dead_lettered
        self.malformed += other.malformed
        self.rejected += other.rejected
        self.keys_revoked += other.keys_revoked
        self.memberships_changed += other.memberships_changed
        self.by_type.update(other.by_type)
        self.removal_times.extend(other.removal_times)

    def counts(self) -> dict[str, int]:
        return {
            "applied": self.applied,
            "duplicate": self.duplicates,
            "ignored": self.ignored,
            "dead_lettered": self.dead_lettered,
            "keys_revoked": self.keys_revoked,
            "memberships_changed": self.memberships_changed,
        }


@dataclass
class ParsedBatch:
    """Records sorted by what they turned out to be."""

    valid: list[tuple[Record, MembershipEvent]] = field(default_factory=list)
    ignored: list[IgnoredEvent] = field(default_factory=list)
    malformed: list[tuple[Record, Failure]] = field(default_factory=list)


class _DryRunRollback(Exception):
    """Raised inside the transaction of a dry run so that nothing it did is kept."""


def _is_per_event_failure(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(exc, asyncpg.PostgresError) and str(sqlstate).startswith(
        _PER_EVENT_SQLSTATE_CLASSES
    )


class BatchHandler:
    """Applies batches of records. Stateless between batches; safe to share."""

    def __init__(
        self,
        pool: Any,
        *,
        types: EventTypes,
        max_event_bytes: int,
        dead_letters: DeadLetterSink | None,
        retry_max_wait_s: float,
        on_db_trouble: Callable[[BaseException], None] | None = None,
        on_db_ok: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        self._types = types
        self._max_event_bytes = max_event_bytes
        self._dead_letters = dead_letters
        self._retry_max_wait_s = retry_max_wait_s
        self._on_db_trouble = on_db_trouble
        self._on_db_ok = on_db_ok

    def _type_label(self, event_type: str) -> str:
        # Bounded label values: configured names, or "other".
        known = self._types.added | self._types.removed
        return event_type if event_type in known else "other"

    def parse(self, records: Sequence[Record]) -> ParsedBatch:
        """Sorts records into valid events, ignored types and malformed records (CPU only, so
        the worker can do it for the next batch while the database applies this one)."""
        batch = ParsedBatch()
        for record in records:
            try:
                parsed = parse_record(
                    record.value, record.headers, types=self._types, max_bytes=self._max_event_bytes
                )
            except MalformedEvent as exc:
                batch.malformed.append((record, Failure("MalformedEvent", str(exc))))
                continue
            if isinstance(parsed, IgnoredEvent):
                batch.ignored.append(parsed)
            else:
                batch.valid.append((record, parsed))
        return batch

    async def handle(
        self, records: Sequence[Record], *, reprocess: bool = False, dry_run: bool = False
    ) -> BatchOutcome:
        """Applies the records' effects; returns once they are committed (or rolled back in
        a dry run) and every malformed record is in the dead-letter topic."""
        return await self.apply(self.parse(records), reprocess=reprocess, dry_run=dry_run)

    async def apply(
        self, batch: ParsedBatch, *, reprocess: bool = False, dry_run: bool = False
    ) -> BatchOutcome:
        """`handle` for a batch already parsed."""
        outcome = BatchOutcome()
        for record, failure in batch.malformed:
            await self._dead_letter(record, failure, dry_run)
            outcome.dead_lettered += 1
            outcome.malformed += 1
            outcome.by_type[("malformed", "dead_lettered")] += 1
        for ignored in batch.ignored:
            outcome.ignored += 1
            outcome.by_type[(self._type_label(ignored.type), "ignored")] += 1
        if batch.valid:
            outcome.add(
                await self._apply_isolating(batch.valid, reprocess=reprocess, dry_run=dry_run)
            )
        if not dry_run:
            self._count(outcome)
        return outcome

    async def _apply_isolating(
        self, items: list[tuple[Record, MembershipEvent]], *, reprocess: bool, dry_run: bool
    ) -> BatchOutcome:
        try:
            return await self._apply_retrying(items, reprocess=reprocess, dry_run=dry_run)
        except asyncpg.PostgresError as exc:
            if not _is_per_event_failure(exc):
                raise
            if len(items) == 1:
                return await self._reject(items[0], exc, dry_run)
        log.warning("batch.isolating", events=len(items))
        outcome = BatchOutcome()
        for item in items:
            try:
                outcome.add(
                    await self._apply_retrying([item], reprocess=reprocess, dry_run=dry_run)
                )
            except asyncpg.PostgresError as exc:
                if not _is_per_event_failure(exc):
                    raise
                outcome.add(await self._reject(item, exc, dry_run))
        return outcome

    async def _reject(
        self, item: tuple[Record, MembershipEvent], exc: BaseException, dry_run: bool
    ) -> BatchOutcome:
        record, event = item
        metrics.ISOLATED_FAILURES.inc()
        # The SQLSTATE text names the problem without quoting the event's values.
        message = f"{type(exc).__name__} (SQLSTATE {getattr(exc, 'sqlstate', '?')})"
        log.warning(
            "event.rejected",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=message,
        )
        await self._dead_letter(record, Failure(type(exc).__name__, message), dry_run)
        outcome = BatchOutcome(dead_lettered=1, rejected=1)
        outcome.by_type[(self._type_label(event.type), "dead_lettered")] += 1
        return outcome

    async def _dead_letter(self, record: Record, failure: Failure, dry_run: bool) -> None:
        if dry_run or self._dead_letters is None:
            return
        await self._dead_letters.publish(record, failure)

    async def _apply_retrying(
        self, items: list[tuple[Record, MembershipEvent]], *, reprocess: bool, dry_run: bool
    ) -> BatchOutcome:
        async for attempt in stamina.retry_context(
            on=is_transient, attempts=None, timeout=None, wait_max=self._retry_max_wait_s
        ):
            with attempt:
                try:
                    outcome = await self._apply_once(items, reprocess=reprocess, dry_run=dry_run)
                except Exception as exc:
                    if is_transient(exc):
                        metrics.DB_RETRIES.labels(type(exc).__name__).inc()
                        log.warning("db.retry", error=type(exc).__name__, attempt=attempt.num)
                        if self._on_db_trouble:
                            self._on_db_trouble(exc)
                    raise
        if self._on_db_ok:
            self._on_db_ok()
        return outcome

    async def _apply_once(
        self, items: list[tuple[Record, MembershipEvent]], *, reprocess: bool, dry_run: bool
    ) -> BatchOutcome:
        origins = {(event.source, event.id): record.origin for record, event in items}
        events, repeated = unique_events(event for _, event in items)
        outcome = BatchOutcome(duplicates=repeated)
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    applied = await apply_events(conn, events, origins, reprocess=reprocess)
                    if dry_run:
                        raise _DryRunRollback
            except _DryRunRollback:
                pass
        fresh = applied.fresh
        outcome.keys_revoked = applied.keys_revoked
        outcome.memberships_changed = applied.memberships_changed
        # Each record counts once: applied if it changed the ledger (or was re-applied), else
        # duplicate, whether repeated within this batch or already seen before.
        pending = {(e.source, e.id) for e in fresh}
        for _, event in items:
            identity = (event.source, event.id)
            name = "applied" if identity in pending else "duplicate"
            pending.discard(identity)
            outcome.by_type[(self._type_label(event.type), name)] += 1
        outcome.applied = len(fresh)
        outcome.duplicates += len(events) - len(fresh)
        outcome.removal_times = [e.time for e in fresh if e.change is Change.REMOVED]
        return outcome

    def _count(self, outcome: BatchOutcome) -> None:
        for (event_type, name), count in outcome.by_type.items():
            if count:
                metrics.EVENTS.labels(event_type, name).inc(count)
        if outcome.keys_revoked:
            metrics.KEYS_REVOKED.labels(keys.REASON_MEMBER_REMOVED).inc(outcome.keys_revoked)
        if outcome.memberships_changed:
            metrics.MEMBERSHIPS_CHANGED.inc(outcome.memberships_changed)
        committed = time.time()
        for removed_at in outcome.removal_times:
            metrics.REVOCATION_LAG.observe(max(0.0, committed - removed_at.timestamp()))
