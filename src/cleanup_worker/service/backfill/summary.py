"""What a backfill run reports: its summary (a table or JSON), and its progress as it goes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from cleanup_worker.domain.rules import Assessment, OrphanReason
from cleanup_worker.errors import SafetyValveError
from cleanup_worker.service.backfill.options import RunOptions

TOP = 10  # accounts and keys listed in the summary


@dataclass(slots=True)
class Summary:
    """What a run found and did; rendered as a table or as JSON by the command."""

    run_id: UUID
    execute: bool
    status: str
    options: RunOptions
    resumed: bool = False
    assessment: Assessment | None = None
    refusal: str | None = None
    revoked: dict[OrphanReason, int] = field(default_factory=dict)  # by the run, all sessions
    examined: int = 0  # candidates re-checked by this session
    revoked_now: int = 0  # of which this session revoked
    batches: int = 0
    assessment_s: float = 0.0
    duration_s: float = 0.0
    longest_transaction_s: float = 0.0

    @property
    def mode(self) -> str:
        return "execute" if self.execute else "dry_run"

    @property
    def keys_revoked(self) -> int:
        return sum(self.revoked.values())

    def continues(self, before: Summary) -> None:
        """This summary is the same run as `before`, resumed in the same process after a lost
        connection: what `before` did counts too."""
        self.revoked_now += before.revoked_now
        self.examined += before.examined
        self.batches += before.batches
        self.longest_transaction_s = max(self.longest_transaction_s, before.longest_transaction_s)

    @property
    def rate(self) -> float:
        """Keys revoked per second by this session, over its whole duration."""
        return self.revoked_now / self.duration_s if self.duration_s > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        found = self.assessment
        options = self.options.as_json()
        return {
            "run_id": str(self.run_id),
            "mode": self.mode,
            "status": self.status,
            "resumed": self.resumed,
            "resumes": options["resumes"],
            "source": options["memberships"] or {"table": "account_memberships"},
            "accounts": options["accounts"],
            "limits": {
                name: options[name] for name in ("max_revocations", "max_fraction", "max_rate")
            },
            "keys_scanned": found.keys_scanned if found else None,
            "keys_unrevoked": found.keys_unrevoked if found else None,
            "orphaned": None if found is None else _by_reason(found.by_reason),
            "accounts_affected": found.accounts_affected if found else None,
            "top_accounts": []
            if found is None
            else [{"account_id": a, "keys": n} for a, n in found.top_accounts],
            "sample_key_ids": [] if found is None else [str(i) for i in found.sample_key_ids],
            "refusal": self.refusal,
            "revoked": _by_reason(self.revoked),
            "examined": self.examined,
            "kept_at_write_time": self.examined - self.revoked_now,
            "batches": self.batches,
            "assessment_seconds": round(self.assessment_s, 3),
            "duration_seconds": round(self.duration_s, 3),
            "keys_revoked_per_second": round(self.rate, 1),
            "longest_transaction_ms": round(self.longest_transaction_s * 1000, 1),
        }


def assessment_fields(found: Assessment) -> dict[str, int]:
    """The assessment's figures, for the `backfill.assessed` log line."""
    return {
        "keys_scanned": found.keys_scanned,
        "keys_unrevoked": found.keys_unrevoked,
        "orphaned": found.candidates,
        **{reason.value: found.by_reason.get(reason, 0) for reason in OrphanReason},
        "accounts_affected": found.accounts_affected,
    }


def _by_reason(counts: Mapping[OrphanReason, int]) -> dict[str, int]:
    result = {reason.value: counts.get(reason, 0) for reason in OrphanReason}
    result["total"] = sum(counts.values())
    return result


class BackfillRefused(SafetyValveError):
    """A safety valve refused the backfill before its first write; carries the run's summary
    for the command to print (exit 3, as every SafetyValveError)."""

    def __init__(self, message: str, summary: Summary) -> None:
        super().__init__(message)
        self.summary = summary


class Reporter(Protocol):
    """Progress for a person or a log; the command picks one."""

    def assessing(self) -> None: ...

    def revoking(self, assessment: Assessment, to_examine: int) -> None: ...

    def advanced(self, examined: int, revoked: int) -> None: ...

    def finished(self) -> None: ...


class QuietReporter:
    """Reports nothing (tests, benchmarks)."""

    def assessing(self) -> None:
        return None

    def revoking(self, assessment: Assessment, to_examine: int) -> None:
        return None

    def advanced(self, examined: int, revoked: int) -> None:
        return None

    def finished(self) -> None:
        return None
