"""The libraries' own log lines: exceptions as text, and a reconnect loop's warnings about a
lost service folded into our outage lines."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from cleanup_worker.logging import configure_logging
from cleanup_worker.retries import Reachability

FLOOR = "Failed to restore the pool connection floor; retrying"


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging puts a handler on the root logger, bound to this test's stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _library_warning(logger: str, message: str, exc: Exception) -> None:
    try:
        raise exc
    except type(exc):
        logging.getLogger(logger).warning(message, exc_info=True)


def test_library_exception_is_rendered_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's warning with an exception is one JSON line whose `exception` is the
    formatted traceback, not a list of Python reprs."""
    configure_logging("json", "info")
    _library_warning("asyncpg.pool", FLOOR, ConnectionRefusedError(111, "Connect call failed"))
    out = capsys.readouterr().err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["event"] == FLOOR
    assert line["module"] == "asyncpg.pool"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert "ConnectionRefusedError: [Errno 111] Connect call failed" in line["exception"]
    assert "exc_info" not in line
    assert "<traceback object" not in out


def _database(probe_answers: asyncio.Event) -> Reachability:
    async def probe() -> bool:
        return probe_answers.is_set()

    return Reachability(
        "database",
        probe,
        explains=lambda exc: isinstance(exc, ConnectionRefusedError),
        interval_s=0.02,
    )


async def test_reconnect_warnings_fold_into_the_outage_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """While the service is lost, the library's warnings are not written: the first one
    starts the probe (`service.unreachable`), and `service.reachable` counts them."""
    configure_logging("json", "info")
    back = asyncio.Event()
    database = _database(back)
    database.absorb("asyncpg.pool", "Failed to restore the pool connection floor")
    try:
        with capture_logs() as ours:
            for _ in range(5):
                _library_warning("asyncpg.pool", FLOOR, ConnectionRefusedError(111, "refused"))
            assert not database.reachable
            back.set()
            await asyncio.wait_for(database.wait(), timeout=5)
    finally:
        await database.close()
    assert FLOOR not in capsys.readouterr().err
    events = [line["event"] for line in ours]
    assert events == ["service.unreachable", "service.reachable"]
    assert ours[-1]["library_warnings_folded"] == 5


async def test_other_warnings_of_the_library_are_still_written(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only the named warning with an exception that means "unreachable" is folded: another
    cause, or another message, is written as before and loses nothing."""
    configure_logging("json", "info")
    database = _database(asyncio.Event())
    database.absorb("asyncpg.pool", "Failed to restore the pool connection floor")
    try:
        _library_warning("asyncpg.pool", FLOOR, PermissionError("password authentication failed"))
        _library_warning("asyncpg.pool", "Pool.close() is taking over 60 seconds", OSError("x"))
        assert database.reachable
    finally:
        await database.close()
    lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    assert [line["event"] for line in lines] == [FLOOR, "Pool.close() is taking over 60 seconds"]


async def test_closing_stops_folding(capsys: pytest.CaptureFixture[str]) -> None:
    """Once its Reachability is closed, the library's warnings are written again."""
    configure_logging("json", "info")
    database = _database(asyncio.Event())
    database.absorb("asyncpg.pool", "Failed to restore the pool connection floor")
    await database.close()
    _library_warning("asyncpg.pool", FLOOR, ConnectionRefusedError(111, "refused"))
    assert database.reachable
    assert FLOOR in capsys.readouterr().err
