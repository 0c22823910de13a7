"""`cleanup-worker run`."""

from __future__ import annotations

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit


@app.command()
def run() -> None:
    """Consume membership events and revoke keys until SIGTERM; exits 0 after a drain."""
    from cleanup_worker.bootstrap import run_worker  # noqa: PLC0415 - keeps --help fast

    settings = settings_or_exit(needs_kafka=True)
    run_async(run_worker(settings))
