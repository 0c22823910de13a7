"""`cleanup-worker replay`: re-read a window of the events topics through the shared handler.

The window is read outside any consumer group (see `adapters.windows`), so the live group's
committed offsets never move. Every batch goes to `BatchHandler.handle`, the very path `run`
uses: a dry run applies it in a transaction that is rolled back, `--execute` commits it.

Malformed records are counted, not dead-lettered again: they were dead-lettered when the live
worker first saw them (the handler is built without a dead-letter sink for replays). The same
holds for an event the database rejects on its own ("rejected").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cleanup_worker.adapters.kafka.clients import PartitionReader
from cleanup_worker.adapters.kafka.windows import Partition, Span, WindowReader
from cleanup_worker.logging import get_logger
from cleanup_worker.service.apply.handler import BatchHandler, BatchOutcome

log = get_logger(__name__)

MALFORMED = ("malformed", "dead_lettered")


@dataclass
class PartitionProgress:
    """One partition of the window, and how far the replay got in it."""

    topic: str
    partition: int
    start: int
    stop: int
    position: int
    records: int = 0

    @property
    def done(self) -> bool:
        return self.position >= self.stop

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "start": self.start,
            "stop": self.stop,
            "records": self.records,
        }


def summarize(outcome: BatchOutcome) -> dict[str, Any]:
    """The counts a summary shows: per event type and outcome, and the totals."""
    events: dict[str, dict[str, int]] = {}
    for (event_type, name), count in sorted(outcome.by_type.items()):
        if count and (event_type, name) != MALFORMED:
            events.setdefault(event_type, {})[name] = count
    return {
        "events": events,
        "applied": outcome.applied,
        "duplicate": outcome.duplicates,
        "ignored": outcome.ignored,
        "malformed": outcome.malformed,
        "future_dated": outcome.future_dated,
        "rejected": outcome.rejected,
        "keys_revoked": outcome.keys_revoked,
        "memberships_changed": outcome.memberships_changed,
    }


@dataclass
class ReplayReport:
    """What a replay read and what it did (or, in a dry run, would do)."""

    execute: bool
    reprocess: bool
    partitions: list[PartitionProgress]
    outcome: BatchOutcome = field(default_factory=BatchOutcome)
    batches: int = 0
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "replay",
            "execute": self.execute,
            "reprocess": self.reprocess,
            "records": self.records,
            **summarize(self.outcome),
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "partitions": [p.as_dict() for p in self.partitions],
        }


Progress = Callable[[PartitionProgress], None]


async def replay(
    consumer: PartitionReader,
    handler: BatchHandler,
    window: Mapping[Partition, Span],
    *,
    execute: bool,
    reprocess: bool,
    batch_size: int,
    on_progress: Progress | None = None,
) -> ReplayReport:
    """Feeds the window to the handler batch by batch; a dry run unless `execute`.

    A dry run rolls each batch back, so it cannot see what its earlier batches would have
    done: an event repeated in two batches, or a member removed in two, is counted in each.
    Its counts are an upper bound; `--execute` counts exactly.
    """
    started = time.perf_counter()
    progress = {
        partition: PartitionProgress(partition[0], partition[1], span.start, span.stop, span.start)
        for partition, span in sorted(window.items())
    }
    report = ReplayReport(execute, reprocess, list(progress.values()))
    log.info(
        "replay.started",
        execute=execute,
        reprocess=reprocess,
        partitions=len(progress),
        records=sum(span.size for span in window.values()),
    )
    if on_progress:
        for part in report.partitions:
            on_progress(part)
    reader = WindowReader(consumer, window, batch_size=batch_size)

    def follow() -> None:
        for partition, part in progress.items():
            moved = (reader.positions[partition], reader.read[partition])
            if moved != (part.position, part.records):
                part.position, part.records = moved
                if on_progress:
                    on_progress(part)

    async for records in reader.batches():
        outcome = await handler.handle(records, reprocess=reprocess, dry_run=not execute)
        report.outcome.add(outcome)
        report.batches += 1
        log.debug("replay.batch", records=len(records), **outcome.counts())
        follow()
    follow()  # a partition may end in offsets that held no record (compaction, markers)
    report.seconds = time.perf_counter() - started
    log.info("replay.finished", records=report.records, **report.outcome.counts())
    return report
