"""Change events of a membership table (Debezium's envelope, decoded) as membership events.

The rows say who is a member: an insert, or an update to a state that is not removed, is an
`added`; a delete, or an update to a removed state, a `removed`; a snapshot read counts like
the row it read. How the envelope arrives (JSON, with or without schemas) is an adapter's
business: `adapters/debezium/envelope.py`. Everything here is pure.

Deletes: a delete's `before` holds the whole row only under REPLICA IDENTITY FULL; otherwise
the columns outside the replica identity are placeholders (`0`, `""`, the epoch) that look
like values. So a delete takes its member from the row key when the key holds the mapped
columns, else from what an earlier change of the same row said (remembered per row key),
and never from `before`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from cleanup_worker.domain.events import Change, Member, MembershipEvent, Origin
from cleanup_worker.domain.values import has_forbidden_characters

__all__ = [
    "CDC_TYPES",
    "CdcMapping",
    "NeedsRowMemory",
    "NoChange",
    "RowChange",
    "RowMember",
    "Unmappable",
    "map_change",
]

# The `type` of the events a change becomes (ledger and metrics labels).
CDC_ADDED = "cdc.member.added"
CDC_REMOVED = "cdc.member.removed"
CDC_TYPES = frozenset({CDC_ADDED, CDC_REMOVED})

# Event ids stay within the ledger's limit; a longer row key is named by its digest.
_ROW_KEY_IN_ID_MAX = 180


class Unmappable(ValueError):
    """A change event that says nothing we can map; the message names what, not the row."""


@dataclass(frozen=True, slots=True)
class CdcMapping:
    """Which columns say who is a member, whether they still are, and since when."""

    account_column: str = "account_id"
    user_column: str = "iam_id"
    state_column: str | None = None  # None: membership is the row's existence
    removed_states: frozenset[str] = frozenset()
    time_column: str | None = None  # None: the commit time


@dataclass(frozen=True, slots=True)
class RowChange:
    """One change of a row, as the adapter decoded it.

    `row_key`: the row's key columns (Debezium's record key), None when the table has none.
    `position`: the connector's position of the change (for PostgreSQL the LSN), so that
    the same change delivered twice has the same identity. `column_time`: the time column of
    `after`, decoded; None when not configured or absent.
    """

    op: str  # c, u, d, r
    before: Mapping[str, object] | None
    after: Mapping[str, object] | None
    row_key: Mapping[str, object] | None
    source: str
    position: int
    commit_time: datetime
    column_time: datetime | None = None
    origin: Origin | None = None

    @property
    def row_key_text(self) -> str | None:
        """The row key, canonical: the same row always gives the same text."""
        if self.row_key is None:
            return None
        return json.dumps(self.row_key, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class RowMember:
    """A row key and the member its row named, as of a position (remembered for deletes)."""

    source: str
    row_key: str
    member: Member
    position: int


@dataclass(frozen=True, slots=True)
class NoChange:
    """A change that changes no membership (another column of the row)."""

    reason: str


@dataclass(frozen=True, slots=True)
class NeedsRowMemory:
    """A delete whose member only the remembered row can tell."""

    change: RowChange


Mapped = tuple[tuple[MembershipEvent, ...], RowMember | None]


def map_change(
    change: RowChange, mapping: CdcMapping, remembered: Member | None = None
) -> Mapped | NoChange | NeedsRowMemory:
    """The membership events a row change means, and the row member to remember.

    `remembered`: the member an earlier change of this row named, if known. Raises
    `Unmappable` for a change that cannot be mapped.
    """
    if change.op == "d":
        return _map_delete(change, mapping, remembered)
    if change.op not in ("c", "u", "r"):
        raise Unmappable(f"operation {change.op!r} is not a row change")
    if change.after is None:
        raise Unmappable(f"operation {change.op!r} without the row after the change")
    member = _member(change.after, mapping, "after")
    removed = _is_removed(change.after, mapping)
    time = change.column_time if mapping.time_column else change.commit_time
    if mapping.time_column and time is None:
        raise Unmappable(f"time column {mapping.time_column!r} missing from the row or null")
    assert time is not None
    if change.op == "u" and change.before is not None and _unchanged(change, mapping, member):
        return NoChange("no mapped column changed")
    remember = _row_member(change, member)
    event = _event(change, member, Change.REMOVED if removed else Change.ADDED, time, "")
    previous = remembered
    if previous is None and change.op == "u" and change.before is not None:
        # An update's `before` is the old row (REPLICA IDENTITY FULL), not placeholders.
        try:
            previous = _member(change.before, mapping, "before")
        except Unmappable:
            previous = None
    if previous is not None and previous != member:
        # The row now names someone else: its former member is no longer a member by it.
        gone = _event(change, previous, Change.REMOVED, change.commit_time, "/previous")
        return (gone, event), remember
    return (event,), remember


def _map_delete(
    change: RowChange, mapping: CdcMapping, remembered: Member | None
) -> Mapped | NeedsRowMemory:
    member = _key_member(change.row_key, mapping) or remembered
    if member is None:
        if change.row_key is None:
            raise Unmappable(
                "delete of a row without a key: the table needs a primary key or "
                "REPLICA IDENTITY FULL with a message key, so deletes can be attributed"
            )
        return NeedsRowMemory(change)
    return (_event(change, member, Change.REMOVED, change.commit_time, ""),), None


def never_seen(change: RowChange, mapping: CdcMapping) -> Unmappable:
    """The verdict on a delete of a row no earlier change named (nothing remembered)."""
    return Unmappable(
        f"delete of a row never seen: its key lacks {mapping.account_column!r} and "
        f"{mapping.user_column!r}, and without REPLICA IDENTITY FULL the other columns of "
        "`before` are placeholders; the replica identity cannot name the member"
    )


def _event(
    change: RowChange, member: Member, kind: Change, time: datetime, suffix: str
) -> MembershipEvent:
    key = change.row_key_text or ""
    if len(key) > _ROW_KEY_IN_ID_MAX:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    # Zero-padded: ids of one row sort by position, so R3's (time, id) order keeps the
    # source's order for changes committed in the same microsecond.
    event_id = f"{change.position:020d}/{change.op}/{key}{suffix}"
    return MembershipEvent(
        source=change.source,
        id=event_id,
        type=CDC_REMOVED if kind is Change.REMOVED else CDC_ADDED,
        change=kind,
        time=time,
        account_id=member[0],
        iam_id=member[1],
        origin=change.origin,
    )


def _text(row: Mapping[str, object], column: str, where: str) -> str:
    if column not in row:
        raise Unmappable(f"column {column!r} missing from {where}")
    value = row[column]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Unmappable(f"column {column!r} of {where} is not text")
    text = str(value)
    if not text:
        raise Unmappable(f"column {column!r} of {where} is empty")
    if has_forbidden_characters(text):
        # As for a CloudEvent's: such a member cannot be stored (NUL) or sent to the database
        # (a lone surrogate), so it would stop every batch it is in.
        raise Unmappable(
            f"column {column!r} of {where} holds control characters or unpaired surrogates"
        )
    return text


def _member(row: Mapping[str, object], mapping: CdcMapping, where: str) -> Member:
    return (_text(row, mapping.account_column, where), _text(row, mapping.user_column, where))


def _key_member(key: Mapping[str, object] | None, mapping: CdcMapping) -> Member | None:
    if key is None or mapping.account_column not in key or mapping.user_column not in key:
        return None
    return _member(key, mapping, "the row key")


def _is_removed(row: Mapping[str, object], mapping: CdcMapping) -> bool:
    if mapping.state_column is None:
        return False
    if mapping.state_column not in row:
        raise Unmappable(f"state column {mapping.state_column!r} missing from the row")
    value = row[mapping.state_column]
    if not isinstance(value, str):
        raise Unmappable(f"state column {mapping.state_column!r} holds no known state")
    return value in mapping.removed_states


def _unchanged(change: RowChange, mapping: CdcMapping, member: Member) -> bool:
    before = change.before
    assert before is not None
    try:
        return _member(before, mapping, "before") == member and _is_removed(
            before, mapping
        ) == _is_removed(change.after or {}, mapping)
    except Unmappable:
        return False


def _row_member(change: RowChange, member: Member) -> RowMember | None:
    key = change.row_key_text
    if key is None:
        return None
    return RowMember(change.source, key, member, change.position)
