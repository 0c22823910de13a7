"""What `backfill` shows: a progress bar on a terminal (else periodic `backfill.progress` log
lines on stderr), then a summary on stdout, as a table or as JSON."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cleanup_worker.bootstrap import run_backfill
from cleanup_worker.cli.progress import ProgressDisplay
from cleanup_worker.domain.rules import Assessment, OrphanReason
from cleanup_worker.service.backfill.options import BackfillRequest
from cleanup_worker.service.backfill.summary import BackfillRefused, Summary
from cleanup_worker.settings import Settings

_CASES = {
    OrphanReason.NO_MEMBERSHIP: "no membership row",
    OrphanReason.MEMBERSHIP_REMOVED: "membership removed",
    OrphanReason.CREATED_BEFORE_MEMBER_SINCE: "created before member_since",
}


class DisplayReporter:
    """The backfill's progress on the shared display: the assessment, then the revocations."""

    def __init__(self, display: ProgressDisplay) -> None:
        self._display = display
        self._total = self._examined = self._revoked = 0

    def assessing(self) -> None:
        self._display.update("assessing", 0, None, label="assessing the keys", phase="assessing")

    def revoking(self, assessment: Assessment, to_examine: int) -> None:
        self._display.update("assessing", 1, 1, label="assessed", phase="assessing")
        self._total = to_examine
        self.advanced(0, 0)

    def advanced(self, examined: int, revoked: int) -> None:
        self._examined += examined
        self._revoked += revoked
        self._display.update(
            "revoking",
            self._examined,
            self._total,
            label=f"revoked {self._revoked:,}",
            phase="revoking",
            revoked=self._revoked,
        )

    def finished(self) -> None:
        self._display.close()


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
    display = ProgressDisplay("backfill.progress", unit="keys", every_s=10.0)
    with display:
        try:
            summary = await run_backfill(settings, request, DisplayReporter(display))
        except BackfillRefused as refused:
            display.close()  # the summary must not be drawn under a running bar
            print_summary(refused.summary, as_json=as_json)
            raise
    print_summary(summary, as_json=as_json)
