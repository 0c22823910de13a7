"""`cleanup-worker dlq list | redrive`: the dead-letter topic, inspected and re-applied."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit
from cleanup_worker.cli.output import counts_table, print_json
from cleanup_worker.cli.progress import ProgressDisplay
from cleanup_worker.service.dead_letters import DeadLetter, RedriveReport
from cleanup_worker.settings import Settings

if TYPE_CHECKING:  # the clients module imports aiokafka; --help stays fast without it
    from cleanup_worker.bootstrap import OperatorClients

dlq = typer.Typer(
    name="dlq",
    help="Inspect the dead-letter topic and re-apply what parses now.",
    no_args_is_help=True,
)
app.add_typer(dlq)


def _read(
    settings: Settings, clients: OperatorClients, view: ProgressDisplay
) -> AsyncIterator[list[DeadLetter]]:
    """Every dead letter now in the topic, decoded, with progress shown on `view`."""
    from cleanup_worker.service.dead_letters import read_dead_letters  # noqa: PLC0415

    return read_dead_letters(
        clients.consumer,
        clients.admin,
        clients.pool,
        topic=settings.dlq_topic,
        classify=clients.handler.classify,
        batch_size=settings.batch_max_records,
        on_progress=lambda done, total: view.update("dead letters", done, total),
    )


async def _list(settings: Settings) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    from cleanup_worker.bootstrap import operator_clients  # noqa: PLC0415 - keeps --help fast

    async with operator_clients(settings) as clients:
        with ProgressDisplay("dlq.progress") as view:
            async for batch in _read(settings, clients, view):
                letters.extend(batch)
    return letters


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)


def _cell(value: Any) -> str:
    return escape(_plain(value))


def _describe(letter: dict[str, Any]) -> str:
    here, origin, error = letter["dlq"], letter["original"], letter["error"]
    if letter["now"] == "event":
        now = "parses, would apply"
    elif letter["now"] == "ignored":
        now = "parses, but its type is not configured (ignored)"
    elif letter["now"] == "future":
        now = f"not yet: {_plain(letter['error_now'])}"
    else:
        now = f"still malformed: {_plain(letter['error_now'])}"
    lines = [
        f"{here['partition']}@{here['offset']}  from {_plain(origin['topic'])}"
        f"[{_plain(origin['partition'])}]@{_plain(origin['offset'])}"
        f"  key {_plain(origin['key'])}  group {_plain(origin['group'])}",
        f"  failed {_plain(letter['failed_at'])} (worker {_plain(letter['worker_version'])}): "
        f"{_plain(error['class'])}: {_plain(error['message'])}",
        f"  now: {now}",
    ]
    if letter["redriven"] is not None:
        redriven = letter["redriven"]
        lines.append(f"  redriven {redriven['at']}: {redriven['outcome']}")
    return "\n".join(lines)


def _print_letters(topic: str, letters: list[dict[str, Any]]) -> None:
    console = Console(highlight=False, soft_wrap=True)
    parse_now = sum(1 for d in letters if d["now"] == "event")
    redriven = sum(1 for d in letters if d["redriven"] is not None)
    console.print(
        f"{len(letters)} dead letter(s) in {topic}: {parse_now} parse now, "
        f"{redriven} already redriven",
        markup=False,
    )
    for letter in letters:
        console.print("\n" + _describe(letter), markup=False)


@dlq.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print the dead letters as JSON."),
) -> None:
    """Show each dead letter: where it came from, why it failed, whether it parses now.

    The payload is never shown. Reads the whole topic outside any consumer group.
    """
    settings = settings_or_exit(needs_kafka=True)
    letters = [letter.as_dict() for letter in run_async(_list(settings))]
    if as_json:
        print_json(
            {
                "command": "dlq list",
                "topic": settings.dlq_topic,
                "dead_letters": len(letters),
                "parses_now": sum(1 for d in letters if d["parses_now"]),
                "applies_now": sum(1 for d in letters if d["applies_now"]),
                "would_apply": sum(1 for d in letters if d["now"] == "event"),
                "redriven": sum(1 for d in letters if d["redriven"] is not None),
                "letters": letters,
            }
        )
    else:
        _print_letters(settings.dlq_topic, letters)


async def _redrive(settings: Settings, *, execute: bool) -> RedriveReport:
    from cleanup_worker.adapters.postgres import redrives  # noqa: PLC0415
    from cleanup_worker.bootstrap import operator_clients  # noqa: PLC0415 - keeps --help fast
    from cleanup_worker.service.dead_letters import redrive  # noqa: PLC0415

    async with operator_clients(settings) as clients:
        with ProgressDisplay("dlq.progress") as view:
            letters = _read(settings, clients, view)
            if not execute:
                return await redrive(letters, clients.handler, clients.pool, execute=False)
            async with redrives.exclusive(clients.pool):
                return await redrive(letters, clients.handler, clients.pool, execute=True)


def _print_redrive(report: RedriveReport) -> None:
    summary = report.as_dict()
    console = Console()
    verb = "redriven" if report.execute else "dry run: nothing was written"
    console.print(f"[bold]dlq redrive[/bold] ({verb})")
    rows = ["dead_letters", "already_redriven", "redriven", "left", "applied", "duplicate",
            "keys_revoked", "memberships_changed"]  # fmt: skip
    console.print(counts_table("totals" if report.execute else "totals (would)", summary, rows))
    if report.left:
        left = Table(title="left in the dead-letter topic")
        for column in ("dlq", "reason", "error now"):
            left.add_column(column)
        for letter, reason in report.left:
            here = letter.record
            left.add_row(f"{here.partition}@{here.offset}", reason, _cell(letter.error_now))
        console.print(left)


@dlq.command("redrive")
def redrive_(
    execute: bool = typer.Option(False, "--execute", help="Apply; without it, a dry run."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Re-apply the dead letters that parse now (after a fix or a settings change).

    Dry run unless --execute. The rest stay; the topic is never modified.

    What was redriven is recorded, so a second redrive repeats nothing.
    """
    settings = settings_or_exit(needs_kafka=True)
    report = run_async(_redrive(settings, execute=execute))
    if as_json:
        print_json(report.as_dict())
    else:
        _print_redrive(report)
