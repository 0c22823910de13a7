"""What a record is (service/apply/classify.py), the clock-skew rule included (docs/design.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.domain.events import EventTypes, IgnoredEvent, MembershipEvent
from cleanup_worker.domain.rules import beyond_clock_skew
from cleanup_worker.service.apply.classify import FutureDated, RecordClassifier
from cleanup_worker.service.apply.failure import Failure

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SECRET = "IBMid-SECRET-7Q9z"


def record(when: datetime, event_type: str = "account.member.removed") -> Record:
    """A structured removal of a member whose id is a marker that must never be quoted."""
    value = json.dumps(
        {
            "specversion": "1.0",
            "id": "e1",
            "source": "/accounts",
            "type": event_type,
            "time": when.isoformat(),
            "data": {"account_id": "a", "iam_id": SECRET},
        }
    ).encode()
    return Record("t", 0, 7, 0, None, value, (("content-type", b"application/cloudevents+json"),))


def classifier(skew_s: float = 300) -> RecordClassifier:
    """A classifier whose clock stands at NOW."""
    return RecordClassifier(EventTypes(), 65536, skew_s, clock=NOW.timestamp)


@pytest.mark.parametrize("ahead_s", [-86_400 * 365, -1, 0, 299, 300])
def test_within_the_skew_is_an_event(ahead_s: float) -> None:
    """Past events (replays) and events up to the allowed skew ahead are applied."""
    found = classifier()(record(NOW + timedelta(seconds=ahead_s)))
    assert isinstance(found, MembershipEvent)
    assert found.origin is not None
    assert (found.origin.topic, found.origin.offset) == ("t", 7)


@pytest.mark.parametrize("when", [NOW + timedelta(seconds=301), datetime(9999, 1, 1, tzinfo=UTC)])
def test_beyond_the_skew_is_future_dated(when: datetime) -> None:
    """Further ahead than the skew: not an event to apply, with its own error class."""
    found = classifier()(record(when))
    assert isinstance(found, FutureDated)
    assert found.failure.error_class == "FutureDatedEvent"
    assert when.isoformat() in found.failure.message
    assert "allowed skew of 300s" in found.failure.message
    assert SECRET not in found.failure.message


def test_zero_skew_refuses_any_time_ahead() -> None:
    """A skew of 0 refuses an event one second ahead, and accepts one dated now."""
    assert isinstance(classifier(0)(record(NOW + timedelta(seconds=1))), FutureDated)
    assert isinstance(classifier(0)(record(NOW)), MembershipEvent)


def test_ignored_types_are_not_judged_by_time() -> None:
    """An event of a type we ignore is ignored, whatever its time."""
    found = classifier()(record(datetime(9999, 1, 1, tzinfo=UTC), "account.renamed"))
    assert isinstance(found, IgnoredEvent)


def test_malformed_is_a_failure() -> None:
    """A record that is not an event is a MalformedEvent failure."""
    bad = Record("t", 0, 1, 0, None, b"{not json", ())
    found = classifier()(bad)
    assert isinstance(found, Failure)
    assert found.error_class == "MalformedEvent"


@given(
    st.integers(min_value=-(10**9), max_value=10**9),
    st.integers(min_value=0, max_value=10**6),
)
def test_beyond_clock_skew_is_exactly_more_than_the_skew(ahead_s: int, skew_s: int) -> None:
    """The rule refuses exactly the times more than `skew` seconds after now."""
    assert beyond_clock_skew(NOW + timedelta(seconds=ahead_s), NOW, skew_s) == (ahead_s > skew_s)
