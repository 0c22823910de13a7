"""Log lines name the module that wrote them."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from cleanup_worker.logging import configure_logging, get_logger

SRC = Path(__file__).parents[2] / "src" / "cleanup_worker"


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """configure_logging puts a handler on the root logger, bound to this test's stderr."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_line_names_its_module(capsys: pytest.CaptureFixture[str]) -> None:
    """A JSON log line carries the `module` it was written from."""
    configure_logging("json", "info")
    try:
        get_logger("cleanup_worker.service.example").info("example.happened", count=3)
        line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    finally:
        structlog.reset_defaults()
    assert line["module"] == "cleanup_worker.service.example"
    assert line["event"] == "example.happened"
    assert line["count"] == 3


def test_console_line_names_its_module() -> None:
    """The console renderer shows the module too."""
    stream = io.StringIO()
    structlog.configure(
        processors=[structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(file=stream),
    )
    try:
        get_logger("cleanup_worker.adapters.example").info("example.happened")
    finally:
        structlog.reset_defaults()
    assert "cleanup_worker.adapters.example" in stream.getvalue()


def test_every_module_logs_under_its_own_name() -> None:
    """Loggers are made only through get_logger(__name__): no line without its module."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "logging.py" and "structlog.get_logger" in text:
            offenders.append(f"{path.name}: structlog.get_logger")
        for call in re.findall(r"get_logger\(([^)]*)\)", text):
            if path.name != "logging.py" and call != "__name__":
                offenders.append(f"{path.name}: get_logger({call})")
    assert offenders == []


def test_library_warnings_are_json_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    """A library's own warning (aiokafka logs through the standard library) comes out as one
    of our JSON lines, naming the library's logger, not as a bare line."""
    configure_logging("json", "info")
    try:
        logging.getLogger("aiokafka.client").error("Unable to update metadata from %s", [])
        logging.getLogger("aiokafka.client").info("chatter below WARNING")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        structlog.reset_defaults()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["event"] == "Unable to update metadata from []"
    assert line["module"] == "aiokafka.client"
    assert line["level"] == "error"
    assert "timestamp" in line
