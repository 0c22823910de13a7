"""What `backfill` shows: a progress bar on a terminal (else periodic `backfill.progress` log
lines on stderr), then a summary on stdout, as a table or as JSON."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from cleanup_worker.adapters.backfill_runs import Assessment
from cleanup_worker.domain.rules import OrphanReason
from cleanup_worker.logging import get_logger
from cleanup_worker.service.backfill import run_backfill
from cleanup_worker.service.backfill_plan import (
    BackfillRefused,
    BackfillRequest,
    Reporter,
    Summary,
)
from cleanup_worker.settings import Settings

log = get_logger(__name__)

LOG_EVERY_S = 10.0

_CASES = {
    OrphanReason.NO_MEMBERSHIP: "no membership row",
    OrphanReason.MEMBERSHIP_REMOVED: "membership removed",
    OrphanReason.CREATED_BEFORE_MEMBER_SINCE: "created before member_since",
}


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} keys/s" if speed else "- keys/s", style="progress.data.speed")


class BarReporter:
    """rich progress on the terminal (stderr): a spinner while assessing, then a bar."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: TaskID | None = None
        self._revoked = 0

    def assessing(self) -> None:
        self._progress.start()
        self._task = self._progress.add_task("assessing api_keys", total=None)

    def revoking(self, assessment: Assessment, to_examine: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, total=1, completed=1, description="assessed")
        self._task = self._progress.add_task("revoked 0", total=to_examine)

    def advanced(self, examined: int, revoked: int) -> None:
        self._revoked += revoked
        if self._task is not None:
            self._progress.update(
                self._task, advance=examined, description=f"revoked {self._revoked:,}"
            )

    def finished(self) -> None:
        self._progress.stop()


class LogReporter:
    """Structured `backfill.progress` lines, at most one every LOG_EVERY_S seconds."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self._every = every_s
        self._total = self._examined = self._revoked = 0
        self._started = self._last = 0.0

    def assessing(self) -> None:
        log.info("backfill.progress", phase="assessing")

    def revoking(self, assessment: Assessment, to_examine: int) -> None:
        self._total = to_examine
        self._started = self._last = time.monotonic()

    def advanced(self, examined: int, revoked: int) -> None:
        self._examined += examined
        self._revoked += revoked
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            rate = self._examined / max(now - self._started, 1e-9)
            log.info(
                "backfill.progress",
                phase="revoking",
                examined=self._examined,
                of=self._total,
                revoked=self._revoked,
                keys_per_s=round(rate, 1),
                eta_s=round((self._total - self._examined) / rate, 1) if rate else None,
            )

    def finished(self) -> None:
        return None


def _table(summary: Summary) -> Table:
    data = summary.as_json()
    found = summary.assessment
    mode = "EXECUTE" if summary.execute else "dry run (no key changed)"
    table = Table(title=f"backfill {summary.run_id}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    source = summary.options.memberships
    table.add_row("mode", mode)
    table.add_row("status", summary.status)
    if summary.options.resumes or summary.resumed:
        table.add_row("resumes", str(summary.options.resumes or summary.run_id))
    if summary.options.resumes:
        table.add_row("to continue it", "cleanup-worker backfill --resume --execute")
    memberships = f"{source.name} ({source.members:,} members)" if source else None
    table.add_row("memberships", memberships or "account_memberships")
    table.add_row("accounts", ", ".join(summary.options.accounts) or "all")
    if found is not None:
        table.add_row("keys scanned", f"{found.keys_scanned:,}")
        table.add_row("keys unrevoked", f"{found.keys_unrevoked:,}")
        verb = "to revoke" if summary.execute else "would be revoked"
        table.add_row(f"orphaned, {verb}", f"{found.candidates:,}")
        for reason, label in _CASES.items():
            table.add_row(f"  {label}", f"{found.by_reason.get(reason, 0):,}")
        table.add_row("accounts affected", f"{found.accounts_affected:,}")
        top = ", ".join(f"{account} ({n:,})" for account, n in found.top_accounts)
        table.add_row("top accounts", top or "-")
        table.add_row("sample key ids", "\n".join(map(str, found.sample_key_ids)) or "-")
    if summary.refusal:
        label = "refused" if summary.execute else "--execute would be refused"
        table.add_row(label, Text(summary.refusal, style="bold red"))
    if summary.execute:
        table.add_row("revoked by this run", f"{summary.keys_revoked:,}")
        for reason, label in _CASES.items():
            table.add_row(f"  {label}", f"{summary.revoked.get(reason, 0):,}")
        table.add_row("kept at write time", f"{data['kept_at_write_time']:,}")
        table.add_row("batches", f"{summary.batches:,}")
        table.add_row("longest transaction", f"{data['longest_transaction_ms']} ms")
    table.add_row("assessment", f"{summary.assessment_s:.2f} s")
    table.add_row("duration", f"{summary.duration_s:.2f} s")
    return table


def print_summary(summary: Summary, *, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(summary.as_json(), indent=2) + "\n")
        sys.stdout.flush()
    else:
        Console().print(_table(summary))


async def run_and_report(settings: Settings, request: BackfillRequest, *, as_json: bool) -> None:
    """Runs the backfill with progress for whoever watches, then prints its summary."""
    console = Console(stderr=True)
    reporter: Reporter = BarReporter(console) if console.is_terminal else LogReporter()
    try:
        summary = await run_backfill(settings, request, reporter)
    except BackfillRefused as refused:
        print_summary(refused.summary, as_json=as_json)
        raise
    finally:
        reporter.finished()  # idempotent; a failure must not leave the bar running
    print_summary(summary, as_json=as_json)
