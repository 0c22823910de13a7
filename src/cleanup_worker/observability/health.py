"""What /livez and /readyz report. The worker tells `Health` what happened through its named
transitions; the probes only ask, and never change it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of /readyz, with the parts that made it."""

    partitions: int
    database: bool
    broker: bool
    retrying_database: bool
    running: bool
    dead_letters_blocked: bool = False

    @property
    def ready(self) -> bool:
        return (
            self.running
            and self.partitions > 0
            and self.database
            and self.broker
            and not self.retrying_database
            and not self.dead_letters_blocked
        )


class Health:
    """Liveness: the poll loop is turning (or deliberately waiting on the database).
    Readiness: partitions are assigned, and the database and the broker answer."""

    def __init__(
        self,
        liveness_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        wait_limit_s: float | None = None,
    ) -> None:
        self._liveness_timeout_s = liveness_timeout_s
        # How long the loop may wait on one batch or commit before it counts as wedged: the
        # clients' own timeouts end such a wait (with a result or an error) well before.
        self._wait_limit_s = wait_limit_s or liveness_timeout_s
        self._clock = clock
        self._last_poll = clock()
        self._waiting_since: float | None = None
        self._running = False
        self._partitions = 0
        self._retrying_database = False
        self._dead_letters_blocked = False

    # --- transitions -------------------------------------------------------------------------

    def started(self) -> None:
        """The consumer joined its group and its poll loop is about to turn."""
        self._running = True
        self._last_poll = self._clock()

    def stopped(self) -> None:
        """The consumer left its group (or never joined)."""
        self._running = False
        self._partitions = 0

    def polled(self) -> None:
        """A fetch returned: the loop is alive."""
        self._last_poll = self._clock()

    def waiting_on_services(self) -> None:
        """The loop waits for a batch transaction or an offset commit to finish (a slow or
        stalled link holds it up; the clients' timeouts bound the wait)."""
        if self._waiting_since is None:
            self._waiting_since = self._clock()

    def done_waiting(self) -> None:
        """The wait ended: the loop turns again."""
        self._waiting_since = None
        self._last_poll = self._clock()

    def partitions_assigned(self, count: int) -> None:
        """The group handed this member `count` partitions in all."""
        self._partitions = count

    def partitions_revoked(self) -> None:
        """A rebalance took the partitions away; not ready until they come back."""
        self._partitions = 0

    def database_trouble(self) -> None:
        """A batch failed on a transient database error and is being retried."""
        self._retrying_database = True

    def database_recovered(self) -> None:
        """A batch committed again."""
        self._retrying_database = False

    def dead_letters_blocked(self) -> None:
        """The dead-letter topic refuses a record (broker down, a missing ACL): its batch waits."""
        self._dead_letters_blocked = True

    def dead_letters_flowing(self) -> None:
        """The dead-letter topic took the record it refused."""
        self._dead_letters_blocked = False

    # --- questions ---------------------------------------------------------------------------

    def seconds_since_poll(self) -> float:
        return self._clock() - self._last_poll

    def is_live(self) -> bool:
        if not self._running or self._retrying_database or self._dead_letters_blocked:
            # Not wedged: either starting/stopping or paused on purpose while retrying (a
            # restart would not grant a missing ACL; it would only add a crash loop).
            return True
        if self._waiting_since is not None:
            return self._clock() - self._waiting_since < self._wait_limit_s
        return self.seconds_since_poll() < self._liveness_timeout_s

    def readiness(self, *, database_answers: bool, broker_answers: bool) -> Readiness:
        """Readiness given what the database and the broker said just now."""
        return Readiness(
            partitions=self._partitions,
            database=database_answers,
            broker=broker_answers,
            retrying_database=self._retrying_database,
            running=self._running,
            dead_letters_blocked=self._dead_letters_blocked,
        )
