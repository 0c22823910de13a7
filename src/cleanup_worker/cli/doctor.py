"""`cleanup-worker doctor`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit
from cleanup_worker.errors import EXIT_FAILED, EXIT_OK

_EPILOG = (
    "Read-only: it writes nothing to the database or the broker. Run it with the worker's own "
    "settings (its login and principal). Exit codes: 0 every check passed (rows marked ? "
    "cannot be checked without writing and do not fail); 1 a check failed; 2 configuration "
    "error. Operator guide: docs/operations.md#doctor."
)
_MARK = {"pass": "✔", "fail": "✘", "unknown": "?"}


@app.command(epilog=_EPILOG)
def doctor(
    *,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Check the estate, read-only: tables, indexes, trigger, grants, clocks, broker, topics."""
    from cleanup_worker.bootstrap import doctor as run_doctor  # noqa: PLC0415 - fast --help

    settings = settings_or_exit()
    diagnosis = run_async(run_doctor(settings))
    if as_json:
        document = {
            "healthy": diagnosis.healthy,
            "checks": [asdict(check) for check in diagnosis.checks],
            "settings": diagnosis.settings,
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        for check in diagnosis.checks:
            typer.echo(f"{_MARK[check.outcome]} {check.group:<8} {check.name}: {check.detail}")
            if check.fix:
                typer.echo(f"    → {check.fix}")
        typer.echo("settings as loaded (secrets never shown):")
        for name, value in diagnosis.settings.items():
            typer.echo(f"    {name}={'' if value is None else value}")
        failed = sum(check.outcome == "fail" for check in diagnosis.checks)
        typer.echo("all checks passed" if diagnosis.healthy else f"{failed} check(s) failed")
    raise typer.Exit(EXIT_OK if diagnosis.healthy else EXIT_FAILED)
