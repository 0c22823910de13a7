"""What /livez and /readyz report, kept by the worker as it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Health:
    """Liveness: the poll loop is turning (or deliberately waiting on the database).
    Readiness: partitions are assigned, and the database and the broker answer."""

    liveness_timeout_s: float
    last_poll: float = field(default_factory=time.monotonic)
    waiting_on_database: bool = False
    assigned_partitions: int = 0
    database_ok: bool = False
    broker_ok: bool = True
    running: bool = False

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def seconds_since_poll(self) -> float:
        return time.monotonic() - self.last_poll

    def is_live(self) -> bool:
        if not self.running or self.waiting_on_database:
            # Not wedged: either starting/stopping or paused on purpose while retrying.
            return True
        return self.seconds_since_poll() < self.liveness_timeout_s

    def is_ready(self) -> bool:
        return (
            self.running
            and self.assigned_partitions > 0
            and self.database_ok
            and self.broker_ok
            and not self.waiting_on_database
        )
