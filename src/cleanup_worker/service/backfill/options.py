"""The backfill's options (new or resumed) and its safety valves: decisions that need no I/O.
`service/backfill/job.py` does the I/O around them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

from cleanup_worker.adapters.membership_file import LoadedFile
from cleanup_worker.domain.rules import Assessment
from cleanup_worker.errors import BackfillError

DEFAULT_BATCH_SIZE = 2_000
DEFAULT_MAX_FRACTION = 0.2
# Batches written side by side (walk.py). Two use a second database core, which takes the
# backfill past 0.8x one set-based UPDATE, while the live worker beside it keeps its lag
# p99 under 100 ms on two cores (docs/performance.md); 1 leaves every other core to it.
DEFAULT_LANES = 2


@dataclass(frozen=True, slots=True)
class BackfillRequest:
    """What the operator asked for; None means "the default" (or, with --resume, "as before")."""

    execute: bool = False
    resume: bool = False
    batch_size: int | None = None
    max_revocations: int | None = None
    max_fraction: float | None = None
    max_rate: float | None = None
    lanes: int | None = None
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
    lanes: int = DEFAULT_LANES
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
            "lanes": self.lanes,
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
            lanes=data.get("lanes", 1),  # recorded before lanes existed: one at a time
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
        lanes=options.lanes if request.lanes is None else request.lanes,
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
