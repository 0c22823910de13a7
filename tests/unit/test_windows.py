"""Replay windows: parsing WHEN, choosing partitions, and turning bounds into offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cleanup_worker.adapters.kafka.windows import (
    AtOffsets,
    AtTime,
    Bound,
    Partition,
    Span,
    parse_when,
    plan,
    select_partitions,
)
from cleanup_worker.errors import WindowError

T = "events"
P0, P1, P2 = (T, 0), (T, 1), (T, 2)
ALL = [P0, P1, P2]
BEGINNING = {P0: 0, P1: 5, P2: 0}
END = {P0: 10, P1: 20, P2: 0}


def _plan(
    start: Bound,
    stop: Bound,
    partitions: list[Partition] = ALL,
    found_start: dict[Partition, int | None] | None = None,
    found_stop: dict[Partition, int | None] | None = None,
) -> dict[Partition, Span]:
    return plan(
        start,
        stop,
        partitions,
        beginning=BEGINNING,
        end=END,
        found_start=found_start or {},
        found_stop=found_stop or {},
    )


@pytest.mark.parametrize("text", ["earliest", "EARLIEST", " earliest "])
def test_earliest_is_a_named_bound(text: str) -> None:
    """`earliest` parses whatever its case and surrounding blanks."""
    assert parse_when(text) == "earliest"


def test_latest_is_a_named_bound() -> None:
    """`latest` parses to the named bound."""
    assert parse_when("latest") == "latest"


def test_utc_time_parses_with_z() -> None:
    """An RFC 3339 time with Z is a UTC instant."""
    assert parse_when("2026-11-26T14:00:00Z") == AtTime(datetime(2026, 11, 26, 14, tzinfo=UTC))


def test_time_keeps_its_offset_as_the_same_instant() -> None:
    """A time with a numeric offset means the same instant as its UTC equivalent."""
    bound = parse_when("2026-11-26T15:00:00.250+01:00")
    assert isinstance(bound, AtTime)
    assert bound.at == datetime(2026, 11, 26, 14, 0, 0, 250_000, tzinfo=UTC)
    assert bound.at.utcoffset() == timedelta(hours=1)
    assert bound.ms == int(datetime(2026, 11, 26, 14, tzinfo=UTC).timestamp() * 1000) + 250


def test_time_without_offset_is_refused() -> None:
    """A local time is ambiguous on a cluster in another zone: it needs an offset."""
    with pytest.raises(WindowError, match="offset"):
        parse_when("2026-11-26T14:00:00")


def test_date_alone_is_refused() -> None:
    """A bare date has no offset and is refused."""
    with pytest.raises(WindowError):
        parse_when("2026-11-26")


@pytest.mark.parametrize("text", ["yesterday", "", "1:", ":5", "1:2:3", "-1:5", "0:x"])
def test_nonsense_is_refused_with_the_accepted_forms(text: str) -> None:
    """Anything else is refused, naming the forms that are accepted."""
    with pytest.raises(WindowError, match="earliest, latest, or PARTITION:OFFSET"):
        parse_when(text)


def test_partition_offset_parses() -> None:
    """PARTITION:OFFSET names an offset in one partition."""
    assert parse_when("2:120") == AtOffsets({2: 120})


def test_several_partition_offsets_parse() -> None:
    """A comma-separated list names one offset per partition."""
    assert parse_when("0:5,2:7") == AtOffsets({0: 5, 2: 7})


def test_a_partition_named_twice_is_refused() -> None:
    """The same partition twice is ambiguous."""
    with pytest.raises(WindowError, match="twice"):
        parse_when("0:5,0:7")


def test_time_before_1970_is_refused() -> None:
    """offsets-for-times cannot look up a negative timestamp."""
    with pytest.raises(WindowError, match="1970"):
        parse_when("1969-12-31T23:00:00+02:00")


def test_every_partition_of_every_topic_by_default() -> None:
    """Without --partition the window covers all partitions of all topics."""
    chosen = select_partitions({"a": [0, 1], "b": [0]}, "earliest", "latest", [])
    assert chosen == [("a", 0), ("a", 1), ("b", 0)]


def test_requested_partitions_only() -> None:
    """--partition restricts the window to those partitions."""
    assert select_partitions({T: [0, 1, 2]}, "earliest", "latest", [2, 0]) == [P0, P2]


def test_a_requested_partition_that_does_not_exist_is_refused() -> None:
    """Asking for a partition the topic lacks is an error, not an empty window."""
    with pytest.raises(WindowError, match="no partition 7"):
        select_partitions({T: [0, 1, 2]}, "earliest", "latest", [7])


def test_offsets_in_from_choose_the_partitions() -> None:
    """--from PARTITION:OFFSET alone covers exactly the partitions it names."""
    assert select_partitions({T: [0, 1, 2]}, AtOffsets({1: 3}), "latest", []) == [P1]


def test_offsets_need_a_single_topic() -> None:
    """With two topics, PARTITION:OFFSET would be ambiguous."""
    with pytest.raises(WindowError, match="exactly one topic"):
        select_partitions({"a": [0], "b": [0]}, AtOffsets({0: 1}), "latest", [])


def test_a_requested_partition_without_a_start_offset_is_refused() -> None:
    """--partition 2 with --from 0:5 leaves partition 2 without a start."""
    with pytest.raises(WindowError, match="no offset for partition 2"):
        select_partitions({T: [0, 1, 2]}, AtOffsets({0: 5}), "latest", [0, 2])


def test_a_stop_offset_outside_the_window_is_refused() -> None:
    """--to naming a partition the window does not read is a mistake worth saying."""
    with pytest.raises(WindowError, match="not in the window"):
        select_partitions({T: [0, 1, 2]}, "earliest", AtOffsets({1: 4}), [0])


def test_a_start_offset_outside_the_requested_partitions_is_refused() -> None:
    """--partition 0 with --from 0:5,1:3 would silently drop partition 1's start."""
    with pytest.raises(WindowError, match="--from names partition 1"):
        select_partitions({T: [0, 1, 2]}, AtOffsets({0: 5, 1: 3}), "latest", [0])


def test_earliest_to_latest_is_everything_each_partition_holds() -> None:
    """earliest..latest spans from the first offset kept to the end captured at the start."""
    assert _plan("earliest", "latest") == {P0: Span(0, 10), P1: Span(5, 20), P2: Span(0, 0)}


def test_from_latest_is_empty() -> None:
    """A window starting at the end holds nothing."""
    assert all(span.size == 0 for span in _plan("latest", "latest").values())


def test_times_resolve_to_the_offsets_the_broker_found() -> None:
    """A time bound takes the offsets-for-times answer of each partition."""
    window = _plan(
        AtTime(datetime(2026, 1, 1, tzinfo=UTC)),
        AtTime(datetime(2026, 1, 2, tzinfo=UTC)),
        [P0, P1],
        found_start={P0: 3, P1: 8},
        found_stop={P0: 6, P1: 12},
    )
    assert window == {P0: Span(3, 6), P1: Span(8, 12)}


def test_a_time_after_the_last_record_resolves_to_the_end() -> None:
    """No record at or after the time: the bound is the end offset (an empty start)."""
    at = AtTime(datetime(2030, 1, 1, tzinfo=UTC))
    window = _plan(at, "latest", [P0], found_start={P0: None})
    assert window == {P0: Span(10, 10)}


def test_offsets_are_clamped_to_what_the_partition_holds() -> None:
    """A start before the first offset kept begins there; a stop past the end stops there."""
    window = _plan(AtOffsets({1: 0}), AtOffsets({1: 99}), [P1])
    assert window == {P1: Span(5, 20)}


def test_a_stop_before_the_start_is_an_empty_window() -> None:
    """--to before --from reads nothing (never a negative span)."""
    window = _plan(AtOffsets({0: 8}), AtOffsets({0: 3}), [P0])
    assert window == {P0: Span(8, 8)}


def test_a_partition_missing_from_an_offset_stop_reads_to_the_end() -> None:
    """--to 0:4 bounds partition 0 only; the window's other partitions read to latest."""
    window = _plan("earliest", AtOffsets({0: 4}), [P0, P1])
    assert window == {P0: Span(0, 4), P1: Span(5, 20)}
