"""The arrival rate that decides whether fetches gather (service/run/flow.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup_worker.service.run.flow import FlowRate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def steady(rate: float, seconds: float, per_fetch: int = 1) -> float:
    clock = Clock()
    flow = FlowRate(clock=clock)
    measured = 0.0
    for _ in range(int(rate * seconds / per_fetch)):
        clock.now += per_fetch / rate
        measured = flow.add(per_fetch)
    return measured


@pytest.mark.parametrize("rate", [20.0, 200.0, 500.0, 5000.0])
def test_a_steady_stream_is_measured_at_its_rate(rate: float) -> None:
    assert steady(rate, seconds=3) == pytest.approx(rate, rel=0.1)


def test_a_record_a_second_never_looks_like_a_stream() -> None:
    """Measured just after each record (the worst moment), far below a gathering rate."""
    assert steady(1.0, seconds=10) < 5.0


def test_records_fetched_together_count_as_much_as_records_fetched_apart() -> None:
    assert steady(500.0, seconds=3, per_fetch=5) == pytest.approx(500.0, rel=0.1)


def test_a_pause_fades_the_rate() -> None:
    clock = Clock()
    flow = FlowRate(clock=clock)
    for _ in range(1000):
        clock.now += 0.002
        flow.add(1)
    clock.now += 2.0  # eight half-lives without records
    assert flow.add(0) < 500.0 / 200


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1000)), max_size=50))
def test_the_rate_is_never_negative_and_an_empty_fetch_never_raises_it(
    fetches: list[tuple[float, int]],
) -> None:
    clock = Clock()
    flow = FlowRate(clock=clock)
    last = 0.0
    for gap, records in fetches:
        clock.now += gap
        rate = flow.add(records)
        assert rate >= 0.0
        if records == 0:
            assert rate <= last + 1e-9
        last = rate
