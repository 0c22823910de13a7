"""Progress of a bulk command: bars on a terminal, structured log lines otherwise ("Interfaces",
docs/design.md).

One helper for backfill, replay and dlq, so that a person at a terminal and a log pipeline
see the same figures, whichever command runs.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cleanup_worker.logging import get_logger

log = get_logger(__name__)


class _Rate(ProgressColumn):
    def __init__(self, unit: str) -> None:
        super().__init__()
        self._unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        text = f"{speed:,.0f} {self._unit}/s" if speed else f"- {self._unit}/s"
        return Text(text, style="progress.data.speed")


class ProgressDisplay:
    """Bars on a terminal (stderr); otherwise one `event` log line per item every `every_s`
    seconds (and when it completes), with its rate and the time left."""

    def __init__(self, event: str, *, unit: str = "records", every_s: float = 5.0) -> None:
        self._event = event
        self._every_s = every_s
        console = Console(stderr=True)
        self._bars = (
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _Rate(unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
            )
            if console.is_terminal
            else None
        )
        self._tasks: dict[str, TaskID] = {}
        self._started: dict[str, float] = {}
        self._logged: dict[str, float] = {}

    def __enter__(self) -> ProgressDisplay:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stops the bars (idempotent): a failure must not leave them running."""
        if self._bars is not None:
            self._bars.stop()

    def update(
        self, item: str, done: int, total: int | None, *, label: str | None = None, **fields: Any
    ) -> None:
        """`item` has `done` of `total` (None: not known yet); `fields` go to the log line."""
        now = time.monotonic()
        started = self._started.setdefault(item, now)
        if self._bars is not None:
            if item not in self._tasks:
                self._tasks[item] = self._bars.add_task(label or item, total=total)
            self._bars.update(
                self._tasks[item], completed=done, total=total, description=label or item
            )
            return
        finished = total is not None and done >= total
        if not finished and now - self._logged.get(item, 0.0) < self._every_s:
            return
        self._logged[item] = now
        rate = done / (now - started) if now > started else None
        eta = round((total - done) / rate, 1) if rate and total is not None else None
        log.info(
            self._event,
            item=item,
            done=done,
            total=total,
            per_s=round(rate, 1) if rate else None,
            eta_s=eta,
            **fields,
        )
