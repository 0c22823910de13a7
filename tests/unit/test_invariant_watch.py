"""The invariant watch's cost cap."""

from __future__ import annotations

from cleanup_worker.service.run.invariant import pause_after


def test_pause_is_the_interval_while_the_assessment_is_cheap() -> None:
    assert pause_after(2.0, interval_s=600, max_busy_fraction=0.02) == 600


def test_pause_stretches_to_keep_the_cap() -> None:
    # 20 s of work at most 2 % of the time: 1 000 s apart.
    assert pause_after(20.0, interval_s=600, max_busy_fraction=0.02) == 1000
