"""How fast records arrive, for the fetches to know whether to gather (clients.py, `pace`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class FlowRate:
    """Records per second, exponentially weighted: a burst shows at once, a pause fades it
    within a few half-lives."""

    def __init__(
        self, half_life_s: float = 0.25, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._decay = math.log(2) / half_life_s
        self._clock = clock
        self._weight = 0.0  # records, each discounted by its age
        self._at = clock()

    def add(self, records: int) -> float:
        """Counts `records` arrived now; the rate including them."""
        now = self._clock()
        self._weight = self._weight * math.exp(-self._decay * (now - self._at)) + records
        self._at = now
        return self._weight * self._decay
