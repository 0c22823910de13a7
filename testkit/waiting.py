"""The one way tests wait for something to become true."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, interval: float = 0.1
) -> None:
    """Polls until `check` is true; fails with the timeout otherwise."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(interval)


async def until_logged(
    logs: Sequence[Mapping[str, Any]], event: str, *, timeout: float = 30.0
) -> Mapping[str, Any]:
    """Waits until `logs` (a `structlog.testing.capture_logs()` list) holds a line `event`;
    returns the first such line."""

    async def seen() -> bool:
        return any(line["event"] == event for line in logs)

    await eventually(seen, timeout=timeout, interval=0.05)
    return next(line for line in logs if line["event"] == event)


async def until_grown(
    read: Callable[[], float], by: float, *, timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Waits until `read()` (a counter) has grown by `by` from its value now."""
    start = read()

    async def grown() -> bool:
        return read() - start >= by

    await eventually(grown, timeout=timeout, interval=interval)


async def until_database_clock(db: Any, moment: datetime, *, timeout: float = 30.0) -> None:
    """Waits until the database's clock (the one `created_at` and the sweep read) is past
    `moment`: for a scenario that needs time to pass, a condition rather than a guess."""

    async def past() -> bool:
        return bool(await db.fetchval("SELECT clock_timestamp() > $1", moment))

    await eventually(past, timeout=timeout, interval=0.05)
