"""What a record turns out to be, by today's rules and settings: a membership event to apply,
an event of a type we ignore, an event dated too far ahead to apply yet, or malformed.

`run`, `replay`, `dlq list` and `dlq redrive` all classify through here, so they agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cleanup_worker.adapters.cloudevents.binding import parse_record
from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.adapters.kafka.dead_letter_topic import UNREADABLE
from cleanup_worker.domain.change_events import NeedsRowMemory
from cleanup_worker.domain.events import EventTypes, IgnoredEvent, MembershipEvent
from cleanup_worker.domain.rules import beyond_clock_skew
from cleanup_worker.errors import MalformedEvent
from cleanup_worker.service.apply.change_events import ChangeEventClassifier, RowEvents
from cleanup_worker.service.apply.failure import Failure

# The error class a future-dated event is dead-lettered with. It is a verdict, not an
# exception: nothing raises it, and the dead letter, `dlq list` and the alert name it.
FUTURE_DATED = "FutureDatedEvent"


@dataclass(frozen=True, slots=True)
class FutureDated:
    """A valid event whose time is further ahead of our clock than the allowed skew."""

    event: MembershipEvent
    failure: Failure


@dataclass(frozen=True, slots=True)
class ChangeEvents:
    """A change event of the CDC topics: its events (each applied or future-dated, like any
    event) and the row member to remember for later deletes."""

    events: tuple[MembershipEvent | FutureDated, ...]
    row: RowEvents


Classified = MembershipEvent | IgnoredEvent | FutureDated | Failure | ChangeEvents | NeedsRowMemory


@dataclass(frozen=True, slots=True)
class RecordClassifier:
    """Parses a record and applies the clock-skew rule ("Clock skew" and "Event contract",
    docs/design.md)."""

    types: EventTypes
    max_bytes: int
    max_future_skew_s: float
    clock: Callable[[], float] = time.time
    # The CDC topics' records are Debezium change events (docs/cdc.md); None: no CDC input.
    changes: ChangeEventClassifier | None = None

    def __call__(self, record: Record) -> Classified:
        if record.unreadable is not None:
            return Failure(UNREADABLE, record.unreadable)
        if self.changes is not None and record.topic in self.changes.topics:
            found = self.changes(record)
            return self.dated(found) if isinstance(found, RowEvents) else found
        try:
            parsed = parse_record(
                record.value,
                record.headers,
                types=self.types,
                max_bytes=self.max_bytes,
                origin=record.origin,
            )
        except MalformedEvent as exc:
            return Failure(MalformedEvent.__name__, str(exc))
        if isinstance(parsed, IgnoredEvent):
            return parsed
        now = datetime.fromtimestamp(self.clock(), UTC)
        if beyond_clock_skew(parsed.time, now, self.max_future_skew_s):
            return FutureDated(parsed, self._future_failure(parsed, now))
        return parsed

    def dated(self, row: RowEvents) -> ChangeEvents:
        """A change's events with the clock-skew rule applied to each."""
        return ChangeEvents(tuple(self._skew_checked(event) for event in row.events), row)

    def _skew_checked(self, event: MembershipEvent) -> MembershipEvent | FutureDated:
        now = datetime.fromtimestamp(self.clock(), UTC)
        if beyond_clock_skew(event.time, now, self.max_future_skew_s):
            return FutureDated(event, self._future_failure(event, now))
        return event

    def _future_failure(self, event: MembershipEvent, now: datetime) -> Failure:
        ahead = (event.time - now).total_seconds()
        # The event time and the skew, never the payload: safe to log and to put in headers.
        message = (
            f"event time {event.time.isoformat()} is {ahead:.0f}s ahead of the worker's clock, "
            f"more than the allowed skew of {self.max_future_skew_s:g}s; "
            "redrive it once its time has come"
        )
        return Failure(FUTURE_DATED, message)
