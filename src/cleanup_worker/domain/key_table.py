"""The key table as a mapping: which table holds the keys, which columns say whose they are,
when they were made, and how a revoked key is marked ("Key table mapping", docs/design.md).

Our own `api_keys` is the default mapping, not a second path. Everything here is pure: the
coherence of the settings (`settings_problem`) and of the columns the catalog reports
(`catalog_problems`); the adapter reads the catalog and builds the statements.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_TABLE",
    "KeyTableMapping",
    "catalog_problems",
    "settings_problem",
    "value_fits",
]

DEFAULT_TABLE = "api_keys"  # ours, created by `migrate`, found through the search_path

_PREFIX = "CLEANUP_KEYS_"

# Types a comparison can be made in without casting the column (so its indexes serve).
_TIMESTAMPS = frozenset({"timestamp with time zone", "timestamp without time zone"})
_TEXTS = frozenset({"text", "character varying", "character", "name", "citext"})
_DIGITS = re.compile(r"[+-]?[0-9]{1,40}")
_IDS = _TEXTS | frozenset({"uuid", "bigint", "integer", "smallint", "numeric"})


@dataclass(frozen=True, slots=True)
class KeyTableMapping:
    """Where the keys live and how a revocation is marked; the defaults describe `api_keys`."""

    table: str | None = None  # "schema.table"; None: our own api_keys
    id_column: str = "id"
    account_column: str = "account_id"
    user_column: str = "iam_id"
    created_column: str = "created_at"
    revoked_at_column: str | None = "revoked_at"  # null while live
    state_column: str | None = None
    live_states: tuple[str, ...] = ()
    revoked_state: str | None = None
    reason_column: str | None = "revocation_reason"
    revoked_by_column: str | None = "revoked_by"
    # How far the key service's clock (when it fills the created column) may be off ours.
    clock_skew_s: float = 5.0

    @property
    def is_default(self) -> bool:
        """Our own api_keys, which `migrate` creates and owns."""
        return self.table is None

    @property
    def audit_in_table(self) -> bool:
        """Whether the table itself records when, why and by whom a key was revoked; else our
        `key_revocations` does, written by the revoking statement."""
        return None not in (self.revoked_at_column, self.reason_column, self.revoked_by_column)

    @property
    def columns(self) -> dict[str, str]:
        """Every mapped column, by the setting that names it."""
        named = {
            "ID_COLUMN": self.id_column,
            "ACCOUNT_COLUMN": self.account_column,
            "USER_COLUMN": self.user_column,
            "CREATED_COLUMN": self.created_column,
            "REVOKED_AT_COLUMN": self.revoked_at_column,
            "STATE_COLUMN": self.state_column,
            "REASON_COLUMN": self.reason_column,
            "REVOKED_BY_COLUMN": self.revoked_by_column,
        }
        return {f"{_PREFIX}{key}": value for key, value in named.items() if value is not None}

    @property
    def marker_columns(self) -> tuple[str, ...]:
        """The columns a revocation writes: the only ones the worker's login may update."""
        candidates = (
            self.revoked_at_column,
            self.state_column,
            self.reason_column,
            self.revoked_by_column,
        )
        return tuple(column for column in candidates if column is not None)


def settings_problem(mapping: KeyTableMapping) -> str | None:
    """The first incoherence of a mapping, as one line naming the setting; None when coherent."""
    for check in (_table_problem, _marker_problem, _state_problem, _duplicate_problem):
        problem = check(mapping)
        if problem is not None:
            return problem
    return None


def _table_problem(mapping: KeyTableMapping) -> str | None:
    if mapping.table is not None:
        parts = mapping.table.split(".")
        if len(parts) != 2 or not all(parts):
            return f"{_PREFIX}TABLE: must be schema-qualified, as schema.table"
    elif mapping != KeyTableMapping(clock_skew_s=mapping.clock_skew_s):
        return f"{_PREFIX}TABLE: required when another {_PREFIX}* column setting is given"
    return None


def _marker_problem(mapping: KeyTableMapping) -> str | None:
    if mapping.revoked_at_column is None and mapping.state_column is None:
        return (
            f"{_PREFIX}REVOKED_AT_COLUMN: a revocation marker is required "
            f"(this, or {_PREFIX}STATE_COLUMN, or both)"
        )
    return None


def _state_problem(mapping: KeyTableMapping) -> str | None:
    if mapping.state_column is None:
        if mapping.revoked_state or mapping.live_states:
            which = "REVOKED_STATE" if mapping.revoked_state else "LIVE_STATES"
            return f"{_PREFIX}{which}: needs {_PREFIX}STATE_COLUMN"
        return None
    if not mapping.revoked_state:
        return f"{_PREFIX}REVOKED_STATE: required with {_PREFIX}STATE_COLUMN"
    if not mapping.live_states:
        return f"{_PREFIX}LIVE_STATES: required with {_PREFIX}STATE_COLUMN"
    if mapping.revoked_state in mapping.live_states:
        return f"{_PREFIX}REVOKED_STATE: must not be one of {_PREFIX}LIVE_STATES"
    return None


def _duplicate_problem(mapping: KeyTableMapping) -> str | None:
    seen: dict[str, str] = {}
    for setting, column in mapping.columns.items():
        if column in seen:
            return f"{setting}: names the same column as {seen[column]}"
        seen[column] = setting
    return None


def catalog_problems(mapping: KeyTableMapping, types: Mapping[str, str]) -> list[str]:
    """What the catalog says against the mapping, one line per setting; empty when usable.

    `types` holds each existing column of the table with its `format_type`.
    """
    problems: list[str] = []
    expected = {
        f"{_PREFIX}ID_COLUMN": (_IDS, "a text, uuid or integer type"),
        f"{_PREFIX}ACCOUNT_COLUMN": (_IDS, "a text, uuid or integer type"),
        f"{_PREFIX}USER_COLUMN": (_IDS, "a text, uuid or integer type"),
        f"{_PREFIX}CREATED_COLUMN": (_TIMESTAMPS, "timestamptz or timestamp"),
        f"{_PREFIX}REVOKED_AT_COLUMN": (_TIMESTAMPS, "timestamptz or timestamp"),
        f"{_PREFIX}STATE_COLUMN": (_TEXTS, "a text type"),
        f"{_PREFIX}REASON_COLUMN": (_TEXTS, "a text type"),
        f"{_PREFIX}REVOKED_BY_COLUMN": (_TEXTS, "a text type"),
    }
    for setting, column in mapping.columns.items():
        found = types.get(column)
        if found is None:
            problems.append(
                f"{setting}: no column {column!r} in {mapping.table or DEFAULT_TABLE}"
                " (an optional column's setting may be set empty)"
            )
            continue
        allowed, wording = expected[setting]
        if _base_type(found) not in allowed:
            problems.append(f"{setting}: column {column!r} is {found}, expected {wording}")
    return problems


def _base_type(formatted: str) -> str:
    # format_type says "character varying(64)", "numeric(20,0)": the family is what counts.
    return formatted.split("(", 1)[0].strip()


_INTEGER_RANGES = {
    "smallint": 2**15,
    "integer": 2**31,
    "bigint": 2**63,
}


def value_fits(column_type: str, value: str) -> bool:
    """Whether `value` (an id from an event or an operator) can be a value of a column of
    `column_type`: a key column of another type cannot hold it, so it matches no key."""
    base = _base_type(column_type)
    if base in _INTEGER_RANGES:
        if not _DIGITS.fullmatch(value):
            return False
        bound = _INTEGER_RANGES[base]
        return -bound <= int(value) < bound
    if base == "numeric":
        return bool(_DIGITS.fullmatch(value))
    if base == "uuid":
        try:
            uuid.UUID(value)
        except ValueError:
            return False
        return True
    return True
