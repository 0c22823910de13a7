"""One row of `cleanup-worker doctor`: what was checked, how it went, and what to do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    # The check cannot be made without writing, or the broker will not say: it is reported,
    # with how to check by hand, and does not fail the run.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Check:
    group: str  # database | kafka | settings
    name: str
    outcome: Outcome
    detail: str
    fix: str = ""

    @classmethod
    def passed(cls, group: str, name: str, detail: str) -> Check:
        return cls(group, name, Outcome.PASS, detail)

    @classmethod
    def failed(cls, group: str, name: str, detail: str, fix: str) -> Check:
        return cls(group, name, Outcome.FAIL, detail, fix)
