"""The backfill's decisions that need no I/O: options (new or resumed), the safety valves, and
the summary a run reports. `service/backfill.py` does the I/O around them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from cleanup_worker.adapters.backfill_runs import Assessment
from cleanup_worker.adapters.membership_file import LoadedFile
from cleanup_worker.domain.rules import OrphanReason
from cleanup_worker.errors import CleanupError, SafetyValveError

DEFAULT_BATCH_SIZE = 2_000
DEFAULT_MAX_FRACTION = 0.2
TOP = 10


class BackfillError(CleanupError):
    """The backfill cannot do what was asked (e.g. nothing to resume); nothing was written."""


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    """What the operator asked for; None means "the default" (or, with --resume, "as before")."""

    execute: bool = False
    resume: bool = False
    batch_size: int | None = None
    max_revocations: int | None = None
    max_fraction: float | None = None
    max_rate: float | None = None
    memberships: Path | None = None
    accounts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The options a run is recorded with, so that `--resume` continues the same backfill."""

    accounts: tuple[str, ...] = ()
    memberships: LoadedFile | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    max_revocations: int | None = None
    max_fraction: float = DEFAULT_MAX_FRACTION
    max_rate: float | None = None
    resumes: UUID | None = None  # a dry run of `--resume`: the run it looks at

    def as_json(self) -> dict[str, Any]:
        file = self.memberships
        return {
            "accounts": list(self.accounts),
            "memberships": None
            if file is None
            else {"file": file.name, "sha256": file.sha256, "members": file.members},
            "batch_size": self.batch_size,
            "max_revocations": self.max_revocations,
            "max_fraction": self.max_fraction,
            "max_rate": self.max_rate,
            "resumes": None if self.resumes is None else str(self.resumes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunOptions:
        file = data.get("memberships")
        return cls(
            accounts=tuple(data.get("accounts", ())),
            memberships=None
            if file is None
            else LoadedFile(file["file"], file["sha256"], file["members"]),
            batch_size=data.get("batch_size", DEFAULT_BATCH_SIZE),
            max_revocations=data.get("max_revocations"),
            max_fraction=data.get("max_fraction", DEFAULT_MAX_FRACTION),
            max_rate=data.get("max_rate"),
        )


def _with_request(options: RunOptions, request: BackfillRequest) -> RunOptions:
    """The options with the limits and pace the request gives explicitly."""
    return replace(
        options,
        batch_size=options.batch_size if request.batch_size is None else request.batch_size,
        max_revocations=options.max_revocations
        if request.max_revocations is None
        else request.max_revocations,
        max_fraction=options.max_fraction if request.max_fraction is None else request.max_fraction,
        max_rate=options.max_rate if request.max_rate is None else request.max_rate,
    )


def new_options(request: BackfillRequest, file: LoadedFile | None) -> RunOptions:
    return _with_request(RunOptions(accounts=request.accounts, memberships=file), request)


def resumed_options(
    run_id: UUID, stored: RunOptions, request: BackfillRequest, file: LoadedFile | None
) -> RunOptions:
    """The options of a resumed run: its scope as recorded, limits and pace as now given."""
    if request.accounts and sorted(request.accounts) != sorted(stored.accounts):
        raise BackfillError(
            f"run {run_id} covers {len(stored.accounts) or 'all'} account(s) as recorded; "
            "--resume continues it as it was: leave out --account"
        )
    recorded = stored.memberships
    if recorded is not None and file is None:
        raise BackfillError(
            f"run {run_id} used --memberships {recorded.name}: pass the same file again"
        )
    if recorded is None and file is not None:
        raise BackfillError(
            f"run {run_id} used account_memberships: --resume cannot switch to a file"
        )
    if recorded is not None and file is not None and recorded.sha256 != file.sha256:
        raise BackfillError(
            f"{file.name} is not the file run {run_id} used (its sha256 differs): "
            "start a new run instead"
        )
    return _with_request(stored, request)


def refusal(assessment: Assessment, options: RunOptions, *, already_revoked: int = 0) -> str | None:
    """The safety valves: why revoking what the assessment found must not go ahead, or None.

    `already_revoked` counts what a resumed run revoked before: the limits apply to the run.
    """
    would = already_revoked + assessment.candidates
    if assessment.candidates and not assessment.has_active_members:
        source = "the memberships file" if options.memberships else "account_memberships"
        return (
            f"{source} has no active member, so every key would be orphaned "
            f"({assessment.candidates:,} keys); load the memberships first"
        )
    limit = options.max_revocations
    if limit is not None and would > limit:
        return f"would revoke {would:,} keys, more than --max-revocations {limit:,}"
    base = assessment.keys_unrevoked + already_revoked
    if base and would / base > options.max_fraction:
        return (
            f"would revoke {would:,} of {base:,} unrevoked keys in scope ({would / base:.1%}), "
            f"more than --max-fraction {options.max_fraction:g}"
        )
    return None


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
    """A safety valve refused the run before its first write; carries the run's summary."""

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
