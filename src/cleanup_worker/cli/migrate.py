"""`cleanup-worker migrate`."""

from __future__ import annotations

import typer

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit


@app.command()
def migrate() -> None:
    """Apply the database migrations (idempotent; safe from several pods at once)."""
    from cleanup_worker.bootstrap import migrate_database  # noqa: PLC0415 - keeps --help fast

    settings = settings_or_exit()
    applied = run_async(migrate_database(settings))
    typer.echo(f"applied {len(applied)} migration(s)" if applied else "schema is up to date")
