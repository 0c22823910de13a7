"""The one path by which records become effects: parse, dead-letter, apply a batch in one
transaction. `replay` and `dlq redrive` call `BatchHandler.handle`; `run`'s consumer loop
calls its two halves, `parse` and `apply`, apart, so that it parses the next batch while the
database applies this one."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import asyncpg

from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.adapters.postgres import keys
from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.adapters.postgres.sqlstate import describe, is_per_event, is_transient
from cleanup_worker.domain.change_events import CDC_TYPES, NeedsRowMemory
from cleanup_worker.domain.events import Change, IgnoredEvent, MembershipEvent
from cleanup_worker.domain.rules import unique_events
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics
from cleanup_worker.retries import Reachability, retrying
from cleanup_worker.service.apply.batch_transaction import apply_events
from cleanup_worker.service.apply.classify import (
    ChangeEvents,
    FutureDated,
    RecordClassifier,
)
from cleanup_worker.service.apply.failure import Failure
from cleanup_worker.service.apply.parsed_batch import ParsedBatch, settle_rows

__all__ = ["BatchHandler", "BatchOutcome", "DeadLetterSink", "Outcome", "ParsedBatch"]

log = get_logger(__name__)


class DeadLetterSink(Protocol):
    async def publish(self, record: Record, failure: Failure) -> None: ...


class Outcome(StrEnum):
    """How a record ended: the `outcome` label of `cleanup_events_total`."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DEAD_LETTERED = "dead_lettered"


@dataclass
class BatchOutcome:
    """What one batch did; counted for logs, metrics and command summaries."""

    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    malformed: int = 0  # of dead_lettered: not a valid event
    future_dated: int = 0  # of dead_lettered: dated beyond the allowed clock skew
    rejected: int = 0  # of dead_lettered: a valid event the database refused on its own
    keys_revoked: int = 0
    memberships_changed: int = 0
    by_type: Counter[tuple[str, Outcome]] = field(default_factory=Counter)

    def add(self, other: BatchOutcome) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.ignored += other.ignored
        self.dead_lettered += other.dead_lettered
        self.malformed += other.malformed
        self.future_dated += other.future_dated
        self.rejected += other.rejected
        self.keys_revoked += other.keys_revoked
        self.memberships_changed += other.memberships_changed
        self.by_type.update(other.by_type)

    def counts(self) -> dict[str, int]:
        return {
            "applied": self.applied,
            "duplicate": self.duplicates,
            "ignored": self.ignored,
            "dead_lettered": self.dead_lettered,
            "keys_revoked": self.keys_revoked,
            "memberships_changed": self.memberships_changed,
        }


class _DryRunRollback(Exception):
    """Raised inside the transaction of a dry run so that nothing it did is kept."""


class BatchHandler:
    """Applies batches of records. Stateless between batches; safe to share."""

    def __init__(
        self,
        pool: Pool,
        *,
        classify: RecordClassifier,
        announce: bool = False,
        on_revoked: Callable[[], None] | None = None,
        dead_letters: DeadLetterSink | None,
        retry_max_wait_s: float,
        note_late_keys: bool = False,
        on_db_trouble: Callable[[], None] | None = None,
        on_db_ok: Callable[[], None] | None = None,
        database: Reachability | None = None,
    ) -> None:
        self._pool = pool
        self._classify = classify
        self._announce = announce
        self._on_revoked = on_revoked
        self._types = classify.types
        self._dead_letters = dead_letters
        self._retry_max_wait_s = retry_max_wait_s
        self._note_late_keys = note_late_keys
        self._on_db_trouble = on_db_trouble
        self._on_db_ok = on_db_ok
        self._database = database

    @property
    def classify(self) -> RecordClassifier:
        """How this handler tells events from the rest (dead letters are inspected alike)."""
        return self._classify

    def _type_label(self, event_type: str) -> str:
        # Bounded label values: configured names, or "other".
        known = self._types.added | self._types.removed | CDC_TYPES
        return event_type if event_type in known else "other"

    def parse(self, records: Sequence[Record]) -> ParsedBatch:
        """Sorts records into valid events, ignored types and malformed records (CPU only, so
        the worker can do it for the next batch while the database applies this one)."""
        batch = ParsedBatch()
        for record in records:
            found = self._classify(record)
            if isinstance(found, MembershipEvent):
                batch.valid.append((record, found))
            elif isinstance(found, IgnoredEvent):
                batch.ignored.append(found)
            elif isinstance(found, FutureDated):
                batch.future.append((record, found))
            elif isinstance(found, ChangeEvents):
                batch.add_change(record, found)
            elif isinstance(found, NeedsRowMemory):
                batch.unresolved.append((record, found))
            else:
                batch.malformed.append((record, found))
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
        if batch.unresolved or batch.remember:
            await settle_rows(
                batch,
                self._pool,
                self._classify,
                dry_run=dry_run,
                retry_max_wait_s=self._retry_max_wait_s,
                database=self._database,
            )
        for record, failure in batch.malformed:
            await self._dead_letter(record, failure, dry_run)
            outcome.dead_lettered += 1
            outcome.malformed += 1
            outcome.by_type[("malformed", Outcome.DEAD_LETTERED)] += 1
        for record, future in batch.future:
            # Not applied now: a redrive applies it once its time has come.
            await self._dead_letter(record, future.failure, dry_run)
            outcome.dead_lettered += 1
            outcome.future_dated += 1
            outcome.by_type[(self._type_label(future.event.type), Outcome.DEAD_LETTERED)] += 1
            if not dry_run:
                metrics.FUTURE_EVENTS.labels(self._type_label(future.event.type)).inc()
        for ignored in batch.ignored:
            outcome.ignored += 1
            outcome.by_type[(self._type_label(ignored.type), Outcome.IGNORED)] += 1
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
            if not is_per_event(exc):
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
                if not is_per_event(exc):
                    raise
                outcome.add(await self._reject(item, exc, dry_run))
        return outcome

    async def _reject(
        self, item: tuple[Record, MembershipEvent], exc: BaseException, dry_run: bool
    ) -> BatchOutcome:
        record, event = item
        metrics.ISOLATED_FAILURES.inc()
        message = describe(exc)
        log.warning(
            "event.rejected",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=message,
        )
        await self._dead_letter(record, Failure(type(exc).__name__, message), dry_run)
        outcome = BatchOutcome(dead_lettered=1, rejected=1)
        outcome.by_type[(self._type_label(event.type), Outcome.DEAD_LETTERED)] += 1
        return outcome

    async def _dead_letter(self, record: Record, failure: Failure, dry_run: bool) -> None:
        if dry_run or self._dead_letters is None:
            return
        await self._dead_letters.publish(record, failure)

    async def _apply_retrying(
        self, items: list[tuple[Record, MembershipEvent]], *, reprocess: bool, dry_run: bool
    ) -> BatchOutcome:
        async for attempt in retrying(
            "database.batch",
            on=is_transient,
            wait_max=self._retry_max_wait_s,
            reachability=self._database,
        ):
            with attempt:
                try:
                    outcome = await self._apply_once(items, reprocess=reprocess, dry_run=dry_run)
                except Exception as exc:
                    if is_transient(exc) and self._on_db_trouble:
                        self._on_db_trouble()
                    raise
        if self._on_db_ok:
            self._on_db_ok()
        return outcome

    async def _apply_once(
        self, items: list[tuple[Record, MembershipEvent]], *, reprocess: bool, dry_run: bool
    ) -> BatchOutcome:
        events, repeated = unique_events(event for _, event in items)
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    applied = await apply_events(
                        conn,
                        events,
                        reprocess=reprocess,
                        announce=self._announce,
                        note_late_keys=self._note_late_keys,
                    )
                    if dry_run:
                        raise _DryRunRollback
            except _DryRunRollback:
                pass
            else:
                _observe_revocation_lag(applied.fresh)
                if applied.keys_revoked and self._on_revoked:
                    self._on_revoked()  # their notices wait in the outbox: wake the relay
        outcome = BatchOutcome(
            applied=len(applied.fresh),
            duplicates=repeated + len(events) - len(applied.fresh),
            keys_revoked=applied.keys_revoked,
            memberships_changed=applied.memberships_changed,
        )
        # Each record counts once: applied if it changed the ledger (or was re-applied), else
        # duplicate, whether repeated within this batch or already seen before.
        pending = {event.identity for event in applied.fresh}
        for _, event in items:
            outcome_of_record = Outcome.APPLIED if event.identity in pending else Outcome.DUPLICATE
            pending.discard(event.identity)
            outcome.by_type[(self._type_label(event.type), outcome_of_record)] += 1
        return outcome

    def _count(self, outcome: BatchOutcome) -> None:
        for (event_type, name), count in outcome.by_type.items():
            if count:
                metrics.EVENTS.labels(event_type, name.value).inc(count)
        if outcome.keys_revoked:
            metrics.KEYS_REVOKED.labels(keys.REASON_MEMBER_REMOVED).inc(outcome.keys_revoked)
        if outcome.memberships_changed:
            metrics.MEMBERSHIPS_CHANGED.inc(outcome.memberships_changed)


def _observe_revocation_lag(fresh: Sequence[MembershipEvent]) -> None:
    """Event time -> now, for the removals a transaction that just committed applied."""
    committed = time.time()
    for event in fresh:
        if event.change is Change.REMOVED:
            metrics.REVOCATION_LAG.observe(max(0.0, committed - event.time.timestamp()))
