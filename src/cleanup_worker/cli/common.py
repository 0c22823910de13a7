"""What every command shares: settings with a one-line failure, and our errors as exit codes
(the codes themselves live in errors.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
import uvloop

from cleanup_worker.errors import EXIT_CONFIG, CleanupError, ConfigurationError, exit_code
from cleanup_worker.settings import Settings, load_settings

T = TypeVar("T")


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"cleanup-worker: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(*, needs_kafka: bool = False) -> Settings:
    """Loads settings and logging; a bad setting ends the process with one line and exit 2."""
    try:
        settings = load_settings()
        if needs_kafka:
            settings.require_kafka()
    except ConfigurationError as exc:
        fail(f"configuration error: {exc}", EXIT_CONFIG)
    from cleanup_worker.startup import configure_process  # noqa: PLC0415 - keeps --help fast

    configure_process(settings)
    return settings


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a command's coroutine, mapping our errors to exit codes without tracebacks.

    On uvloop: the event loop, its transports and its timers in C instead of Python cost the
    worker about 5 % less CPU per event (docs/performance.md), and the database is asyncpg's
    own choice of loop."""
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ConfigurationError as exc:
        fail(f"configuration error: {exc}", EXIT_CONFIG)
    except CleanupError as exc:
        fail(str(exc), exit_code(exc))
