"""`cleanup-worker backfill`."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit
from cleanup_worker.service.backfill.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_FRACTION,
    BackfillRequest,
)
from cleanup_worker.settings import Settings

_EXECUTE = "Revoke the orphaned keys. Without it the run is a dry run that changes no key."
_RESUME = (
    "Continue the latest interrupted --execute run from its checkpoint, with the same scope "
    "(and the same --memberships file). Without --execute: show what it has left to do."
)
_MEMBERSHIPS = (
    "Take the active members from this CSV (header account_id,iam_id,member_since; "
    "member_since optional) instead of account_memberships."
)


def _positive_rate(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise typer.BadParameter("must be greater than 0")
    return value


_EPILOG = (
    "Exit codes: 0 done, or stopped by SIGTERM after a batch (resume with --resume --execute); "
    "1 failed; 2 configuration error; 3 refused (a safety valve, or another backfill is "
    "running). Operator guide: docs/backfill.md."
)


@app.command(epilog=_EPILOG)
def backfill(
    *,
    execute: Annotated[bool, typer.Option("--execute", help=_EXECUTE)] = False,
    resume: Annotated[bool, typer.Option("--resume", help=_RESUME)] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=10_000,
            metavar="N",
            help=f"Keys per transaction. (default: {DEFAULT_BATCH_SIZE})",
        ),
    ] = None,
    max_revocations: Annotated[
        int | None,
        typer.Option(
            "--max-revocations",
            min=0,
            metavar="N",
            help="Refuse (exit 3) if the run would revoke more keys than this. (default: no limit)",
        ),
    ] = None,
    max_fraction: Annotated[
        float | None,
        typer.Option(
            "--max-fraction",
            min=0.0,
            max=1.0,
            metavar="F",
            help="Refuse (exit 3) if the run would revoke more than this fraction of the "
            f"unrevoked keys in scope. (default: {DEFAULT_MAX_FRACTION})",
        ),
    ] = None,
    max_rate: Annotated[
        float | None,
        typer.Option(
            "--max-rate",
            metavar="KEYS_PER_S",
            callback=_positive_rate,
            help="Examine at most this many candidate keys per second. (default: no limit)",
        ),
    ] = None,
    lanes: Annotated[
        int | None,
        typer.Option(
            "--lanes",
            min=1,
            max=8,
            metavar="N",
            help="Write N batches side by side, each on a connection of its own. 1 leaves the "
            "database's other cores to the live worker; more than 2 is for a maintenance "
            "window. (default: 2)",
        ),
    ] = None,
    memberships: Annotated[
        Path | None,
        typer.Option(
            "--memberships",
            metavar="FILE.csv",
            exists=True,
            dir_okay=False,
            readable=True,
            help=_MEMBERSHIPS,
        ),
    ] = None,
    accounts: Annotated[
        list[str] | None,
        typer.Option("--account", metavar="ID", help="Only keys of this account (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve /metrics on this port while the run lasts (for Prometheus).",
        ),
    ] = None,
) -> None:
    """Find the keys whose owner is no longer a member (R5); with --execute, revoke them."""
    # Imported here so that `--help` stays fast.
    from cleanup_worker.cli.backfill_output import run_and_report  # noqa: PLC0415

    settings = settings_or_exit()
    request = BackfillRequest(
        execute=execute,
        resume=resume,
        batch_size=batch_size,
        max_revocations=max_revocations,
        max_fraction=max_fraction,
        max_rate=max_rate,
        lanes=lanes,
        memberships=memberships,
        accounts=tuple(dict.fromkeys(accounts or ())),
    )
    run_async(
        _with_metrics(settings, metrics_port, run_and_report(settings, request, as_json=as_json))
    )


async def _with_metrics(
    settings: Settings, port: int | None, run: Coroutine[Any, Any, None]
) -> None:
    if port is None:
        await run
        return
    from cleanup_worker.observability.http import metrics_endpoint  # noqa: PLC0415

    async with metrics_endpoint(settings.http_host, port):
        await run
