"""`cleanup-worker report`."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import fail, run_async, settings_or_exit
from cleanup_worker.errors import EXIT_CONFIG, WindowError


class Format(StrEnum):
    HTML = "html"
    JSON = "json"
    CSV = "csv"


_EPILOG = (
    "WHEN: an RFC 3339 time or a date (midnight UTC); the period is [--from, --to). "
    "Read-only; runs as a login with the cleanup_operator role's read grants. JSON schema: "
    "docs/report-schema.json. Exit codes: 0 written; 1 failed; 2 configuration error or bad "
    "arguments. Operator guide: docs/operations.md#report."
)


@app.command(epilog=_EPILOG)
def report(
    *,
    start: Annotated[str, typer.Option("--from", metavar="WHEN", help="Start (included).")],
    end: Annotated[str, typer.Option("--to", metavar="WHEN", help="End (excluded).")],
    slo: Annotated[
        float,
        typer.Option("--slo", metavar="SECONDS", min=0, help="The revocation SLO in seconds."),
    ] = 60.0,
    output_format: Annotated[
        Format, typer.Option("--format", help="html (one self-contained file), json or csv.")
    ] = Format.HTML,
    output: Annotated[
        Path | None,
        typer.Option("--output", metavar="FILE", help="Write here instead of standard output."),
    ] = None,
    invariant: Annotated[
        bool,
        typer.Option(
            "--invariant/--no-invariant",
            help="Assess the live keys of removed members now (one read of every key).",
        ),
    ] = True,
) -> None:
    """Revocation timeliness for auditors: exposure per rule and day, against the SLO."""
    from cleanup_worker.bootstrap import report as build  # noqa: PLC0415 - keeps --help fast
    from cleanup_worker.service.report.figures import parse_when  # noqa: PLC0415
    from cleanup_worker.service.report.html import render_html  # noqa: PLC0415
    from cleanup_worker.service.report.table import render_csv  # noqa: PLC0415

    try:
        period = parse_when(start, name="--from"), parse_when(end, name="--to")
    except WindowError as exc:
        fail(str(exc), EXIT_CONFIG)
    if period[1] <= period[0]:
        fail("--to must be after --from", EXIT_CONFIG)
    settings = settings_or_exit()
    document = run_async(build(settings, *period, slo, assess=invariant))
    if output_format is Format.JSON:
        text = json.dumps(document, indent=2) + "\n"
    elif output_format is Format.CSV:
        text = render_csv(document)
    else:
        text = render_html(document)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
