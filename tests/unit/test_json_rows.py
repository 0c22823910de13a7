"""A batch's rows as one JSON parameter: what PostgreSQL's json_to_recordset reads back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from cleanup_worker.adapters.postgres.json_rows import json_rows

moments = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
)


@given(moments)
def test_a_time_keeps_its_instant_to_the_microsecond(moment: datetime) -> None:
    """The written time parses back to the same instant, microseconds included."""
    (row,) = json.loads(json_rows([{"t": moment}]))
    assert datetime.fromisoformat(row["t"]) == moment


def test_a_time_keeps_its_offset_and_a_naive_time_is_utc() -> None:
    """An aware time says its offset; a naive one is written as UTC, not as the server's zone."""
    tokyo = datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9)))
    naive = datetime(2026, 1, 1, 0, 0, 0, 5)
    rows = json.loads(json_rows([{"t": tokyo}, {"t": naive}, {"t": None}]))
    assert rows == [
        {"t": "2026-01-01T09:00:00+09:00"},
        {"t": "2026-01-01T00:00:00.000005+00:00"},
        {"t": None},
    ]
