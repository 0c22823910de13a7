"""The rules R1–R5 and the clock-skew rule ("Rules", docs/design.md) stated as pure
functions: no I/O, no clock, no Kafka, no database.

Each rule has one function here whose docstring names it, so a reader looking for "what does R3
say, exactly" starts in this file, and every one of them depends on the *set* of events seen,
never on their order. Where a rule is *applied* differs: the clock-skew check and R1's choice
of one removal per member run here, on a batch's events; R3 runs here on the rows a batch
locked; R1 and R5 (and the R1 re-check and R6 of domain/late_keys.py) run as set-based SQL
statements in adapters/postgres/keys.py, one statement for a whole batch, and tests hold each
statement to its function here (the table in docs/design.md names them). R4 is kept by the
database itself, a trigger of the migrations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from cleanup_worker.domain.events import Change, MembershipEvent

__all__ = [
    "Assessment",
    "HistoryEntry",
    "Membership",
    "OrphanReason",
    "State",
    "beyond_clock_skew",
    "derive_membership",
    "latest_removals",
    "orphan_reason",
    "removal_revokes",
    "unique_events",
]


class State(StrEnum):
    """`account_memberships.state`."""

    ACTIVE = "active"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class Membership:
    """A row of `account_memberships` (without its key columns)."""

    state: State
    member_since: datetime | None
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One membership event of a member, as the ledger keeps it."""

    change: Change
    time: datetime
    event_id: str
    source: str

    @classmethod
    def from_event(cls, event: MembershipEvent) -> HistoryEntry:
        """The entry that `event` leaves in its member's history."""
        return cls(change=event.change, time=event.time, event_id=event.id, source=event.source)

    @property
    def order_key(self) -> tuple[datetime, str, str]:
        """The R3 order of events: time, then event id, then source."""
        return (self.time, self.event_id, self.source)


# The R3 position of a (pseudo-)event. Fields, compared left to right:
#   bounded    False only for the "since always" baseline, which precedes everything;
#              the fields after it are then never compared (there is at most one such point).
#   time       the event time;
#   real       False for the baseline pseudo-event, which precedes real events at an equal time;
#   event_id, source   R3's tie-breakers;
#   change     makes the order total even if two entries share (time, id, source) but disagree
#              about the change (a producer bug): "removed" > "added", so the safe side wins.
_Position = tuple[bool, datetime, bool, str, str, str]


@dataclass(frozen=True, slots=True)
class _Point:
    """A (pseudo-)event placed in the R3 order."""

    position: _Position
    change: Change
    time: datetime | None  # None: the "since always" baseline
    changed_at: datetime  # what `changed_at` becomes when this point is the latest


def _baseline_point(baseline: Membership) -> _Point:
    changed_at = baseline.changed_at
    position: _Position
    if baseline.state is State.REMOVED:
        position = (True, changed_at, False, "", "", Change.REMOVED)
        return _Point(position, Change.REMOVED, changed_at, changed_at)
    if baseline.member_since is None:  # "since always": first; its position's time is unused
        position = (False, changed_at, False, "", "", Change.ADDED)
        return _Point(position, Change.ADDED, None, changed_at)
    position = (True, baseline.member_since, False, "", "", Change.ADDED)
    return _Point(position, Change.ADDED, baseline.member_since, changed_at)


def _entry_point(entry: HistoryEntry) -> _Point:
    position: _Position = (True, entry.time, True, entry.event_id, entry.source, entry.change)
    return _Point(position, entry.change, entry.time, entry.time)


def derive_membership(
    baseline: Membership | None, history: Iterable[HistoryEntry]
) -> Membership | None:
    """R3 membership state: the `account_memberships` row of one member, from its events.

    The events are ordered by (time, event id, source). `baseline`, a row that existed before
    any event for the member was seen, counts as a pseudo-event: an `added` at its
    `member_since` when active (null: "since always", before every event), or a `removed` at
    its `changed_at` when removed; at an equal time it precedes the real events. Then:

    - `state` is the change of the latest (pseudo-)event;
    - `member_since` is the time of the earliest `added` after the latest `removed` — null
      when removed, and null when that `added` is the "since always" baseline;
    - `changed_at` is the time of the latest event, or `baseline.changed_at` when the latest
      is the baseline.

    With neither a baseline nor a history there is no row (None). The result is a function of
    the *set* of entries: their order and repetition do not matter. So a re-sent `added` never
    moves an old member's `member_since`, and an older event never overwrites a newer one.
    """
    points = {_entry_point(entry) for entry in history}
    if baseline is not None:
        points.add(_baseline_point(baseline))
    if not points:
        return None

    latest = max(points, key=lambda p: p.position)
    if latest.change is Change.REMOVED:
        return Membership(State.REMOVED, member_since=None, changed_at=latest.changed_at)

    last_removal = max((p.position for p in points if p.change is Change.REMOVED), default=None)
    since_then = [
        p
        for p in points
        if p.change is Change.ADDED and (last_removal is None or p.position > last_removal)
    ]
    first_add = min(since_then, key=lambda p: p.position)  # never empty: `latest` is in it
    return Membership(State.ACTIVE, member_since=first_add.time, changed_at=latest.changed_at)


def removal_revokes(key_created_at: datetime, key_revoked: bool, removal_time: datetime) -> bool:
    """R1 removal (with R4 permanence): does `removed(a, u, T=removal_time)` revoke this key?

    Yes iff the key is not revoked yet and was created at or before T. A key created after the
    removal belongs to a later membership and is left alone; a revoked key is never touched
    again (its reason and `revoked_by` stay those of the first revocation), and nothing ever
    un-revokes one (R4). R2: an `added` revokes nothing, so it has no function here.

    The answer grows with T, so of many removals of one member the latest decides (see
    `latest_removals`).
    """
    return not key_revoked and key_created_at <= removal_time


class OrphanReason(StrEnum):
    """Why R5 finds a key orphaned."""

    NO_MEMBERSHIP = "no_membership"
    MEMBERSHIP_REMOVED = "membership_removed"
    CREATED_BEFORE_MEMBER_SINCE = "created_before_member_since"


def orphan_reason(
    key_created_at: datetime, key_revoked: bool, membership: Membership | None
) -> OrphanReason | None:
    """R5 orphan (backfill): why this key is orphaned, or None when it is not.

    A key is orphaned when it is not revoked and either its (a, u) has no membership row, or
    the row is `removed`, or the key was created strictly before `member_since` (it belongs to
    an earlier membership). A null `member_since` orphans nothing by the last test, and a key
    created exactly at `member_since` belongs to the current membership.
    """
    if key_revoked:
        return None
    if membership is None:
        return OrphanReason.NO_MEMBERSHIP
    if membership.state is State.REMOVED:
        return OrphanReason.MEMBERSHIP_REMOVED
    if membership.member_since is not None and key_created_at < membership.member_since:
        return OrphanReason.CREATED_BEFORE_MEMBER_SINCE
    return None


@dataclass(frozen=True, slots=True)
class Assessment:
    """R5 over a set of keys: how many there are, and how many it orphans by each case.

    The backfill's safety valves decide on it before the first write."""

    keys_scanned: int
    keys_unrevoked: int
    by_reason: dict[OrphanReason, int]
    accounts_affected: int
    top_accounts: list[tuple[str, int]] = field(default_factory=list)
    sample_key_ids: list[str] = field(default_factory=list)  # ids as text
    has_active_members: bool = True

    @property
    def candidates(self) -> int:
        return sum(self.by_reason.values())


def latest_removals(events: Iterable[MembershipEvent]) -> dict[tuple[str, str], MembershipEvent]:
    """R1 batched: per (account_id, iam_id), the removal with the greatest `order_key`.

    Applying it under R1 revokes a superset of what any earlier removal of the same member
    would (`removal_revokes` grows with T), so one UPDATE per member per batch suffices.
    Only the `revoked_by` of keys differs, and it names a removal that does revoke them.
    `added` events are ignored (R2).
    """
    latest: dict[tuple[str, str], MembershipEvent] = {}
    for event in events:
        if event.change is not Change.REMOVED:
            continue
        member = (event.account_id, event.iam_id)
        current = latest.get(member)
        if current is None or event.order_key > current.order_key:
            latest[member] = event
    return latest


def beyond_clock_skew(event_time: datetime, now: datetime, max_skew_s: float) -> bool:
    """Clock skew (docs/design.md): an event dated more than `max_skew_s` seconds after `now` is not
    applied. A future-dated removal would keep its member `removed` past every real re-add,
    and R5 would then revoke the keys of their next membership. Events from the past are
    normal (replays)."""
    return (event_time - now).total_seconds() > max_skew_s


def unique_events(events: Iterable[MembershipEvent]) -> tuple[list[MembershipEvent], int]:
    """Drops repeats of the same (source, id), keeping the first.

    Returns the unique events in input order and the number dropped.
    """
    seen: set[tuple[str, str]] = set()
    unique: list[MembershipEvent] = []
    dropped = 0
    for event in events:
        identity = (event.source, event.id)
        if identity in seen:
            dropped += 1
            continue
        seen.add(identity)
        unique.append(event)
    return unique, dropped
