"""Health: named transitions in, liveness and readiness out."""

from __future__ import annotations

from cleanup_worker.observability.health import Health


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running(clock: Clock, partitions: int = 3) -> Health:
    """A started Health with `partitions` assigned."""
    health = Health(60.0, clock)
    health.started()
    health.partitions_assigned(partitions)
    return health


def test_not_ready_before_start() -> None:
    """A worker that has not joined its group is not ready, even if everything answers."""
    health = Health(60.0, Clock())
    assert not health.readiness(database_answers=True, broker_answers=True).ready


def test_ready_when_assigned_and_services_answer() -> None:
    """Started, partitions assigned, database and broker answering: ready."""
    assert running(Clock()).readiness(database_answers=True, broker_answers=True).ready


def test_not_ready_when_a_service_does_not_answer() -> None:
    """Either ping failing makes it not ready."""
    health = running(Clock())
    assert not health.readiness(database_answers=False, broker_answers=True).ready
    assert not health.readiness(database_answers=True, broker_answers=False).ready


def test_revoked_partitions_make_it_not_ready_until_assigned_again() -> None:
    """A rebalance takes readiness away until partitions come back."""
    health = running(Clock())
    health.partitions_revoked()
    assert not health.readiness(database_answers=True, broker_answers=True).ready
    health.partitions_assigned(1)
    assert health.readiness(database_answers=True, broker_answers=True).ready


def test_database_trouble_until_recovered() -> None:
    """While a batch retries on the database it is not ready, but still live."""
    clock = Clock()
    health = running(clock)
    health.database_trouble()
    clock.now += 600
    assert not health.readiness(database_answers=True, broker_answers=True).ready
    assert health.is_live()
    health.database_recovered()
    health.polled()
    assert health.readiness(database_answers=True, broker_answers=True).ready


def test_refused_dead_letters_until_they_flow() -> None:
    """While the dead-letter topic refuses a record the worker is not ready, but still live
    (a restart would not grant a missing ACL)."""
    clock = Clock()
    health = running(clock)
    health.dead_letters_blocked()
    clock.now += 600
    answer = health.readiness(database_answers=True, broker_answers=True)
    assert (answer.ready, answer.dead_letters_blocked) == (False, True)
    assert health.is_live()
    health.dead_letters_flowing()
    health.polled()
    assert health.readiness(database_answers=True, broker_answers=True).ready


def test_wedged_loop_is_not_live() -> None:
    """No poll for longer than the liveness timeout: not live."""
    clock = Clock()
    health = running(clock)
    clock.now += 59
    assert health.is_live()
    clock.now += 2
    assert not health.is_live()
    health.polled()
    assert health.is_live()


def test_stopped_is_live_and_not_ready() -> None:
    """Stopping is not being wedged; it is not ready either."""
    clock = Clock()
    health = running(clock)
    health.stopped()
    clock.now += 600
    assert health.is_live()
    assert not health.readiness(database_answers=True, broker_answers=True).ready


def test_readiness_question_changes_nothing() -> None:
    """Asking with failing services does not change the next answer."""
    health = running(Clock())
    health.readiness(database_answers=False, broker_answers=False)
    assert health.readiness(database_answers=True, broker_answers=True).ready


def test_waiting_on_a_batch_is_live_up_to_the_wait_limit() -> None:
    """A loop held up by a stalled batch or commit is live past the liveness timeout, until
    the wait limit, and then counts as wedged."""
    clock = Clock()
    health = Health(60.0, clock, wait_limit_s=170.0)
    health.started()
    health.waiting_on_services()
    clock.now += 100
    assert health.is_live()
    clock.now += 71
    assert not health.is_live()


def test_the_loop_counts_as_turning_once_the_wait_ends() -> None:
    """After a long wait ends, liveness is judged from its end, not from the last fetch."""
    clock = Clock()
    health = Health(60.0, clock, wait_limit_s=170.0)
    health.started()
    health.waiting_on_services()
    clock.now += 100
    health.done_waiting()
    clock.now += 59
    assert health.is_live()
    clock.now += 2
    assert not health.is_live()
