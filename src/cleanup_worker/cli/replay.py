"""`cleanup-worker replay`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cleanup_worker.adapters.kafka.windows import Bound, parse_when
from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit
from cleanup_worker.cli.output import counts_table, print_json
from cleanup_worker.cli.progress import ProgressDisplay
from cleanup_worker.errors import WindowError
from cleanup_worker.logging import get_logger
from cleanup_worker.service.replay import ReplayReport
from cleanup_worker.settings import Settings

log = get_logger(__name__)


def _when(value: str) -> Bound:
    try:
        return parse_when(value)
    except WindowError as exc:
        raise typer.BadParameter(str(exc)) from None


def _print_report(report: ReplayReport) -> None:
    summary = report.as_dict()
    console = Console()
    verb = "replayed" if report.execute else "dry run: nothing was written"
    console.print(f"[bold]replay[/bold] ({verb}; reprocess={report.reprocess})")
    parts = Table(title="partitions")
    for column in ("topic", "partition", "start", "stop", "records"):
        parts.add_column(column, justify="left" if column == "topic" else "right")
    for part in report.partitions:
        numbers = (part.partition, part.start, part.stop, part.records)
        parts.add_row(escape(part.topic), *map(str, numbers))
    console.print(parts)
    events = Table(title="events by type")
    for column in ("type", "outcome", "count"):
        events.add_column(column, justify="right" if column == "count" else "left")
    for event_type, outcomes in summary["events"].items():
        for name, count in outcomes.items():
            events.add_row(escape(event_type), name, str(count))
    console.print(events)
    rows = ["records", "applied", "duplicate", "ignored", "malformed", "rejected",
            "keys_revoked", "memberships_changed"]  # fmt: skip
    console.print(counts_table("totals" if report.execute else "totals (would)", summary, rows))


async def _replay(
    settings: Settings,
    topics: list[str],
    start: Bound,
    stop: Bound,
    partitions: list[int],
    *,
    execute: bool,
    reprocess: bool,
) -> ReplayReport:
    from cleanup_worker.adapters.kafka.windows import resolve_window  # noqa: PLC0415
    from cleanup_worker.bootstrap import operator_clients  # noqa: PLC0415 - keeps --help fast
    from cleanup_worker.service.replay import replay as run_replay  # noqa: PLC0415

    async with operator_clients(settings) as clients:
        window = await resolve_window(
            clients.consumer, clients.admin, topics, start, stop, requested=partitions
        )
        with ProgressDisplay("replay.progress") as display:
            return await run_replay(
                clients.consumer,
                clients.handler,
                window,
                execute=execute,
                reprocess=reprocess,
                batch_size=settings.batch_max_records,
                on_progress=lambda part: display.update(
                    f"{part.topic}[{part.partition}]",
                    part.position - part.start,
                    part.stop - part.start,
                ),
            )


@app.command()
def replay(
    *,
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            metavar="WHEN",
            help="Start: an RFC 3339 time, earliest, latest, or PARTITION:OFFSET[,P:O...].",
        ),
    ],
    to: Annotated[
        str,
        typer.Option("--to", metavar="WHEN", help="Stop before this (default: the end as of now)."),
    ] = "latest",
    topic: Annotated[
        list[str] | None,
        typer.Option(
            metavar="TOPIC", help="A topic to read (repeatable; default: CLEANUP_KAFKA_TOPICS)."
        ),
    ] = None,
    partition: Annotated[
        list[int] | None,
        typer.Option(min=0, metavar="N", help="Only this partition (repeatable; default: all)."),
    ] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Apply; without it, a dry run.")
    ] = False,
    reprocess: Annotated[
        bool,
        typer.Option("--reprocess", help="Apply events already in the ledger again (idempotent)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Re-read a window of the events topic(s) through the worker's rules, outside the group.

    Dry run unless --execute. The live group's committed offsets are never touched.

    Malformed records are counted, not dead-lettered again.
    """
    start, stop = _when(from_), _when(to)
    settings = settings_or_exit(needs_kafka=True)
    topics = topic or settings.consumed_topics
    if settings.dlq_topic in topics:
        raise typer.BadParameter(
            "that is the dead-letter topic: use `dlq redrive`", param_hint="--topic"
        )
    report = run_async(
        _replay(
            settings, topics, start, stop, partition or [], execute=execute, reprocess=reprocess
        )
    )
    if as_json:
        print_json(report.as_dict())
    else:
        _print_report(report)
