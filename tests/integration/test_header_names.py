"""A header name that is not UTF-8: librdkafka producers (kcat, confluent-kafka) can write one,
Kafka's own clients cannot. aiokafka fails to decode such a record before the worker sees it,
so the worker stops there rather than skip anything (docs/operations.md, Known limits)."""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

import pytest

from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, binary, event
from testkit.kafka import committed_offsets, publisher
from testkit.processes import spawn_worker
from testkit.waiting import eventually


async def _kcat_with_bad_header_name(settings: Settings, values: list[bytes], headers: Any) -> None:
    # Arguments as bytes: the header name is raw bytes that no str can carry.
    options = [b"-H" + name.encode() + b"=" + value for name, value in headers]
    args = [b"kcat", b"-P", b"-b", settings.require_kafka().encode(), b"-p", b"0", b"-t"]
    process = await asyncio.create_subprocess_exec(
        *args, settings.kafka_topics[0].encode(), *options, b"-H\xff\xfe=1",
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate(b"\n".join(values) + b"\n")
    assert process.returncode == 0, err.decode()


async def _stops(worker: asyncio.subprocess.Process) -> str:
    try:
        _, stderr = await asyncio.wait_for(worker.communicate(), 60)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    assert worker.returncode not in (0, None)
    return stderr.decode(errors="replace")


async def _committed(settings: Settings) -> int | None:
    return (await committed_offsets(settings)).get(0)


@pytest.mark.timeout(180)
async def test_a_header_name_that_is_not_utf8_stops_the_worker_and_nothing_is_skipped(
    settings: Settings, db: Any
) -> None:
    """The worker exits at such a record with what came before it applied and committed, and
    neither it nor the valid events behind it; a restart stops at the same offset."""
    if shutil.which("kcat") is None:
        pytest.fail("kcat not found: `apt-get install kcat` (.ci/run does it)", pytrace=False)
    before, blocked, after = (event("removed", "acct", user, at(5)) for user in ("a", "b", "c"))
    keys = {user: await seed_key(db, "acct", user, at(0)) for user in ("a", "b", "c")}
    worker = await spawn_worker(settings)
    async with publisher(settings) as pub:
        await pub.events([before], partition=0, mode="b")

        async def applied() -> bool:
            return await _committed(settings) == 1

        await eventually(applied, timeout=60)
        value, headers = binary(blocked)
        await _kcat_with_bad_header_name(settings, [value, value], headers)
        await pub.events([after], partition=0, mode="b")
    assert "UnicodeDecodeError" in await _stops(worker)
    assert await _committed(settings) == 1
    assert "UnicodeDecodeError" in await _stops(await spawn_worker(settings))
    assert await _committed(settings) == 1
    assert await revoked_keys(db) == {keys["a"]: ("member_removed", before.ref)}
    assert await ledger_size(db) == 1
