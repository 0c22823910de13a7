"""`cleanup-worker replay`, and what the operator commands share: clients, progress, output."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from cleanup_worker.adapters.windows import Bound, WindowError, parse_when
from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit
from cleanup_worker.errors import ServiceUnavailable
from cleanup_worker.logging import get_logger
from cleanup_worker.service.handler import BatchHandler
from cleanup_worker.service.replay import PartitionProgress, ReplayReport
from cleanup_worker.settings import Settings

log = get_logger(__name__)


class ProgressView:
    """Bars on a terminal (stderr); otherwise a progress log line per item every few seconds."""

    def __init__(self, event: str, *, every_s: float = 5.0) -> None:
        self._event = event
        self._every_s = every_s
        console = Console(stderr=True)
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                transient=False,
            )
            if console.is_terminal
            else None
        )
        self._tasks: dict[str, TaskID] = {}
        self._logged: dict[str, float] = {}

    def __enter__(self) -> ProgressView:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, name: str, done: int, total: int) -> None:
        if self._progress is not None:
            if name not in self._tasks:
                self._tasks[name] = self._progress.add_task(name, total=total)
            self._progress.update(self._tasks[name], completed=done, total=total)
            return
        now = time.monotonic()
        if done >= total or now - self._logged.get(name, 0.0) >= self._every_s:
            self._logged[name] = now
            log.info(self._event, item=name, done=done, total=total)

    def partition(self, part: PartitionProgress) -> None:
        self.update(
            f"{part.topic}[{part.partition}]", part.position - part.start, part.stop - part.start
        )


@dataclass
class Clients:
    consumer: Any
    admin: Any
    pool: Any
    handler: BatchHandler


@asynccontextmanager
async def operator_clients(settings: Settings) -> AsyncIterator[Clients]:
    """A standalone consumer (no group), a small pool, and the shared handler without a
    dead-letter sink: what `replay` and `dlq` need, closed again on the way out."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - keeps --help fast
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    from cleanup_worker.adapters import kafka, postgres  # noqa: PLC0415
    from cleanup_worker.bootstrap import build_handler  # noqa: PLC0415
    from cleanup_worker.observability.health import Health  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        # earliest: an offset that retention removed since the window was resolved reads on
        # from the first one left, instead of jumping to the end.
        consumer = kafka.standalone_consumer(settings, auto_offset_reset="earliest")
        admin = AIOKafkaAdminClient(**kafka.client_options(settings))
        try:
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            await admin.start()
            stack.push_async_callback(admin.close)
        except KafkaError as exc:
            raise ServiceUnavailable(f"Kafka unreachable ({type(exc).__name__})") from None
        try:
            async with asyncio.timeout(settings.database_connect_timeout_s):
                pool = await postgres.create_pool(settings, max_size=2)
        except TimeoutError:
            raise ServiceUnavailable(
                f"database unreachable after {settings.database_connect_timeout_s:g}s"
            ) from None
        stack.push_async_callback(pool.close)
        handler = build_handler(settings, pool, None, Health(settings.liveness_timeout_s))
        yield Clients(consumer, admin, pool, handler)


def print_json(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


def counts_table(title: str, summary: dict[str, Any], rows: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("count", justify="right")
    for name in rows:
        table.add_row(name.replace("_", " "), str(summary[name]))
    return table


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
    from cleanup_worker.adapters.windows import resolve_window  # noqa: PLC0415
    from cleanup_worker.service.replay import replay as run_replay  # noqa: PLC0415

    async with operator_clients(settings) as clients:
        window = await resolve_window(
            clients.consumer, clients.admin, topics, start, stop, requested=partitions
        )
        with ProgressView("replay.progress") as view:
            return await run_replay(
                clients.consumer,
                clients.handler,
                window,
                execute=execute,
                reprocess=reprocess,
                batch_size=settings.batch_max_records,
                on_progress=view.partition,
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
    topics = topic or settings.kafka_topics
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
