"""`cleanup-worker dlq list | redrive`: inspect the dead-letter topic and re-apply what parses now.

The topic is read whole (beginning to the end offsets as of the start) outside any consumer
group, and never modified. A dead letter is re-applied as the record it was, carrying its
original topic, partition, offset, key and headers, through `BatchHandler.handle`, the path
`run` uses. Each one that the handler committed is then noted in `dlq_redrives`; a crash
between the two only means the next redrive applies it again, which changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.adapters.kafka.clients import Admin, PartitionReader, Record
from cleanup_worker.adapters.kafka.windows import WindowReader, resolve_window
from cleanup_worker.adapters.postgres import cdc_rows, redrives
from cleanup_worker.adapters.postgres.connections import Pool
from cleanup_worker.domain.change_events import NeedsRowMemory
from cleanup_worker.domain.events import IgnoredEvent, Member, MembershipEvent
from cleanup_worker.logging import get_logger
from cleanup_worker.service.apply.classify import ChangeEvents, FutureDated, RecordClassifier
from cleanup_worker.service.apply.failure import Failure
from cleanup_worker.service.apply.handler import BatchHandler, BatchOutcome
from cleanup_worker.service.replay import summarize

log = get_logger(__name__)

Status = Literal["event", "ignored", "future", "malformed"]


def _iso(ms: int | str | None) -> str | None:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat() if ms is not None else None
    except (ValueError, OverflowError, OSError):
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def fingerprint(record: Record) -> str:
    """A digest of the record's bytes: tells it apart from another at the same place."""
    digest = hashlib.sha256()
    parts: list[bytes | None] = [record.key, record.value]
    for name, value in record.headers:
        parts += [name.encode(), value]
    for part in parts:
        digest.update(b"\xff" if part is None else len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, decoded; its payload is never shown."""

    record: Record
    provenance: dict[str, str]
    status: Status
    error_now: str | None
    event: MembershipEvent | None
    redriven: redrives.Redriven | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.record)

    def original(self) -> Record:
        """The record as the worker first saw it: its own place, key and headers."""
        prov, here = self.provenance, self.record
        topic = prov.get(dlq.H_TOPIC)
        partition, offset = _int(prov.get(dlq.H_PARTITION)), _int(prov.get(dlq.H_OFFSET))
        if topic is None or partition is None or offset is None:  # not written by us
            topic, partition, offset = here.topic, here.partition, here.offset
        timestamp = _int(prov.get(dlq.H_TIMESTAMP))
        return Record(
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=here.timestamp_ms if timestamp is None else timestamp,
            key=here.key,
            value=here.value,
            headers=tuple(h for h in here.headers if h[0] not in dlq.PROVENANCE_HEADERS),
        )

    def as_dict(self) -> dict[str, Any]:
        prov = self.provenance
        return {
            "dlq": {
                "topic": self.record.topic,
                "partition": self.record.partition,
                "offset": self.record.offset,
                "timestamp": _iso(self.record.timestamp_ms),
            },
            "original": {
                "topic": prov.get(dlq.H_TOPIC),
                "partition": _int(prov.get(dlq.H_PARTITION)),
                "offset": _int(prov.get(dlq.H_OFFSET)),
                "timestamp": _iso(prov.get(dlq.H_TIMESTAMP)),
                "key": prov.get(dlq.H_KEY),
                "group": prov.get(dlq.H_GROUP),
            },
            "error": {
                "class": prov.get(dlq.H_ERROR_CLASS),
                "message": prov.get(dlq.H_ERROR_MESSAGE),
            },
            "worker_version": prov.get(dlq.H_VERSION),
            "failed_at": _iso(prov.get(dlq.H_FAILED_AT)),
            "parses_now": self.status != "malformed",
            "applies_now": self.status == "event",
            "now": self.status,
            "error_now": self.error_now,
            "redriven": None
            if self.redriven is None
            else {"outcome": self.redriven.outcome, "at": self.redriven.at.isoformat()},
        }


def inspect(
    record: Record,
    classify: RecordClassifier,
    *,
    done: redrives.Redriven | None = None,
    remembered: dict[tuple[str, str], tuple[Member, int]] | None = None,
) -> DeadLetter:
    """Decodes the provenance and classifies the record with today's rules, settings and clock.

    A future-dated letter has no event to apply yet: it becomes one once its time has come.
    A change event is classified as read from its original topic (the CDC topics' records
    are change events); a delete that needs a remembered row is resolved from `remembered`.
    """
    provenance = dlq.decode_provenance(dict(record.headers))
    redriven = done if done is not None and done.fingerprint == fingerprint(record) else None
    original = DeadLetter(record, provenance, "malformed", None, None).original()
    found = classify(original)
    if isinstance(found, NeedsRowMemory) and classify.changes is not None:
        key = (found.change.source, found.change.row_key_text or "")
        resolved = classify.changes.resolved(found, (remembered or {}).get(key))
        found = resolved if isinstance(resolved, Failure) else classify.dated(resolved)
    if isinstance(found, ChangeEvents):
        first = found.events[0]
        if isinstance(first, FutureDated):
            return DeadLetter(record, provenance, "future", first.failure.message, None, redriven)
        found = first
    if isinstance(found, NeedsRowMemory):
        return DeadLetter(record, provenance, "malformed", "needs a remembered row", None, redriven)
    if isinstance(found, MembershipEvent):
        return DeadLetter(record, provenance, "event", None, found, redriven)
    if isinstance(found, IgnoredEvent):
        return DeadLetter(record, provenance, "ignored", None, None, redriven)
    if isinstance(found, FutureDated):
        return DeadLetter(record, provenance, "future", found.failure.message, None, redriven)
    return DeadLetter(record, provenance, "malformed", found.message, None, redriven)


async def read_dead_letters(
    consumer: PartitionReader,
    admin: Admin,
    pool: Pool,
    *,
    topic: str,
    classify: RecordClassifier,
    batch_size: int,
    on_progress: Callable[[int, int], None] | None = None,
) -> AsyncIterator[list[DeadLetter]]:
    """The whole topic as it is now, batch by batch, each letter inspected.

    `on_progress(read, total)` follows the reading (total: records in the window).
    """
    done = await redrives.load(pool, topic)
    window = await resolve_window(consumer, admin, [topic], "earliest", "latest")
    total = sum(span.size for span in window.values())
    log.info("dlq.read", topic=topic, records=total)
    read = 0
    async for records in WindowReader(consumer, window, batch_size=batch_size).batches():
        read += len(records)
        if on_progress:
            on_progress(read, total)
        remembered = await _remembered(pool, classify, records)
        yield [
            inspect(r, classify, done=done.get((r.partition, r.offset)), remembered=remembered)
            for r in records
        ]


async def _remembered(
    pool: Pool, classify: RecordClassifier, records: list[Record]
) -> dict[tuple[str, str], tuple[Member, int]]:
    """The remembered rows of the dead-lettered deletes that need one (docs/cdc.md)."""
    if classify.changes is None:
        return {}
    keys = []
    for record in records:
        letter = DeadLetter(
            record, dlq.decode_provenance(dict(record.headers)), "malformed", None, None
        )
        found = (
            classify.changes(letter.original())
            if letter.original().topic in classify.changes.topics
            else None
        )
        if isinstance(found, NeedsRowMemory):
            keys.append((found.change.source, found.change.row_key_text or ""))
    if not keys:
        return {}
    async with pool.acquire() as conn:
        return await cdc_rows.recall(conn, keys)


@dataclass
class RedriveReport:
    """What a redrive did (or, in a dry run, would do), letter by letter where it matters."""

    execute: bool
    total: int = 0
    already: int = 0
    redriven: list[tuple[DeadLetter, str]] = field(default_factory=list)
    left: list[tuple[DeadLetter, str]] = field(default_factory=list)
    outcome: BatchOutcome = field(default_factory=BatchOutcome)

    def as_dict(self) -> dict[str, Any]:
        def place(letter: DeadLetter) -> dict[str, Any]:
            return {"partition": letter.record.partition, "offset": letter.record.offset}

        return {
            "command": "dlq redrive",
            "execute": self.execute,
            "dead_letters": self.total,
            "already_redriven": self.already,
            "redriven": len(self.redriven),
            "left": len(self.left),
            **{k: v for k, v in summarize(self.outcome).items() if k != "malformed"},
            "redriven_letters": [{**place(d), "outcome": o} for d, o in self.redriven],
            "left_letters": [{**place(d), "reason": r, "error": d.error_now} for d, r in self.left],
        }


async def redrive(
    letters: AsyncIterator[list[DeadLetter]], handler: BatchHandler, pool: Pool, *, execute: bool
) -> RedriveReport:
    """Re-applies each letter that parses now and was not redriven before; leaves the rest.

    One letter per transaction, so that each has an exact outcome: a dead-letter topic is
    small, and a letter the database still rejects must not hold back the others.
    """
    report = RedriveReport(execute)
    async for batch in letters:
        for letter in batch:
            report.total += 1
            if letter.redriven is not None:
                report.already += 1
                continue
            if letter.event is None:
                report.left.append((letter, letter.status))
                continue
            outcome = await handler.handle([letter.original()], dry_run=not execute)
            report.outcome.add(outcome)
            if outcome.dead_lettered:  # the database refused it again; the handler logged why
                report.left.append((letter, "rejected"))
                continue
            result = "applied" if outcome.applied else "duplicate"
            if execute:
                here, event = letter.record, letter.event
                await redrives.record(
                    pool,
                    dlq=here.origin,
                    fingerprint=letter.fingerprint,
                    original=letter.original().origin,
                    event=event.identity,
                    outcome=result,
                )
            report.redriven.append((letter, result))
    log.info(
        "dlq.redrive.finished",
        execute=execute,
        dead_letters=report.total,
        redriven=len(report.redriven),
        already=report.already,
        left=len(report.left),
    )
    return report
