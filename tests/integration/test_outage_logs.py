"""What a worker writes while its database is away for 20 s: a handful of JSON lines, the
libraries' own included, every exception as text ("Retries wait for the service, not a
backoff", docs/design.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import asyncpg
import pytest

from cleanup_worker.settings import Settings
from testkit.database import revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import publisher
from testkit.outages import start_dev_services, stop_dev_service
from testkit.processes import spawn_worker
from testkit.waiting import eventually

OUTAGE_S = 20.0
# service.unreachable, service.reachable, a retry line for each operation that found the
# database gone (the batch, the late-key sweep), and the batch applied afterwards.
HANDFUL = 6


async def _collect(stream: asyncio.StreamReader, lines: list[tuple[float, bytes]]) -> None:
    """Each stderr line with the moment it arrived."""
    while line := await stream.readline():
        lines.append((time.monotonic(), line))


async def _revoked(database_url: str, count: int) -> bool:
    db = await asyncpg.connect(database_url)
    try:
        return len(await revoked_keys(db)) >= count
    finally:
        await db.close()


@pytest.mark.timeout(240)
async def test_database_outage_of_20_s_writes_a_handful_of_json_lines(
    settings: Settings, database_url: str
) -> None:
    """From the moment PostgreSQL stops until the removal that arrived meanwhile is applied,
    the worker writes at most a handful of lines, each one JSON, none with a Python repr of a
    traceback: asyncpg's reconnect warnings are folded into our own outage lines."""
    db: Any = await asyncpg.connect(database_url)
    before = event("removed", "acct", "before", at(10))
    during = event("removed", "acct", "during", at(10))
    for removal in (before, during):
        await seed_key(db, "acct", removal.iam_id, at(0))
    await db.close()
    worker = await spawn_worker(settings)
    assert worker.stderr is not None
    lines: list[tuple[float, bytes]] = []
    reading = asyncio.create_task(_collect(worker.stderr, lines))
    try:
        async with publisher(settings) as pub:
            await pub.events([before])
            await eventually(lambda: _revoked(database_url, 1), timeout=60)
            down = time.monotonic()
            await stop_dev_service("postgres")
            await pub.events([during])
            # The outage is the fault under test: it lasts its 20 s whatever the worker does.
            await asyncio.sleep(OUTAGE_S - (time.monotonic() - down))
            await start_dev_services()
        await eventually(lambda: _revoked(database_url, 2), timeout=60)
        applied = time.monotonic()
    finally:
        worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), timeout=settings.shutdown_grace_s + 5)
        await reading
    written = [line.decode() for arrived, line in lines if down <= arrived <= applied]
    text = "".join(written)
    print(f"{len(written)} lines from the database stopping to the removal applied:\n{text}")
    assert all(isinstance(json.loads(line), dict) for line in written), text
    assert "<traceback object" not in text
    assert len(written) <= HANDFUL, text
