"""A deliberately plain reference for the rules, shared by the unit and integration tests.

It reads the rules of docs/design.md as a sequential state machine — dedupe, sort, replay — and
shares no code with `cleanup_worker.domain.rules` beyond its data types, so comparing the two
compares two formulations of R1–R4 rather than one formulation with itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cleanup_worker.domain.events import Change, MembershipEvent
from cleanup_worker.domain.rules import Membership, State

Member = tuple[str, str]  # (account_id, iam_id)


@dataclass(frozen=True)
class KeyFact:
    """What the rules need to know about one row of `api_keys`."""

    key_id: str
    account_id: str
    iam_id: str
    created_at: datetime
    revoked: bool


def _apply_baseline(row: Membership | None, baseline: Membership) -> Membership:
    """The baseline row, replayed as the pseudo-event R3 makes of it."""
    if baseline.state is State.REMOVED:
        return Membership(State.REMOVED, None, baseline.changed_at)
    if row is not None and row.state is State.ACTIVE:
        return Membership(State.ACTIVE, row.member_since, baseline.changed_at)
    return Membership(State.ACTIVE, baseline.member_since, baseline.changed_at)


def _apply_event(row: Membership | None, event: MembershipEvent) -> Membership:
    """One real event, replayed."""
    if event.change is Change.REMOVED:
        return Membership(State.REMOVED, None, event.time)
    if row is not None and row.state is State.ACTIVE:
        return Membership(State.ACTIVE, row.member_since, event.time)
    return Membership(State.ACTIVE, event.time, event.time)


def _replay(baseline: Membership | None, events: list[MembershipEvent]) -> Membership | None:
    """Replays one member's sorted events, slipping the baseline in where R3 places it."""
    row: Membership | None = None
    pending = baseline
    for event in events:
        if pending is not None:
            at = pending.changed_at if pending.state is State.REMOVED else pending.member_since
            if at is None or at <= event.time:  # "since always", or not after the event
                row = _apply_baseline(row, pending)
                pending = None
        row = _apply_event(row, event)
    if pending is not None:
        row = _apply_baseline(row, pending)
    return row


def expected_state(
    baselines: Mapping[Member, Membership],
    keys: Iterable[KeyFact],
    events: Iterable[MembershipEvent],
) -> tuple[dict[Member, Membership], set[str]]:
    """The final membership rows and the set of revoked key ids, for any order of `events`.

    Dedupe by (source, id), sort by (time, id, source), then run a state machine per member
    from nothing, with the baseline inserted into the sequence as R3 describes; every
    `removed` revokes the member's unrevoked keys created at or before its time.
    """
    seen: set[tuple[str, str]] = set()
    unique: list[MembershipEvent] = []
    for event in events:
        if (event.source, event.id) not in seen:
            seen.add((event.source, event.id))
            unique.append(event)
    unique.sort(key=lambda e: (e.time, e.id, e.source))

    per_member: dict[Member, list[MembershipEvent]] = {member: [] for member in baselines}
    for event in unique:
        per_member.setdefault((event.account_id, event.iam_id), []).append(event)

    rows: dict[Member, Membership] = {}
    for member, member_events in per_member.items():
        row = _replay(baselines.get(member), member_events)
        if row is not None:
            rows[member] = row

    key_list = list(keys)
    revoked = {key.key_id for key in key_list if key.revoked}
    for event in unique:
        if event.change is not Change.REMOVED:
            continue
        for key in key_list:
            owner = (key.account_id, key.iam_id)
            mine = owner == (event.account_id, event.iam_id)
            if mine and key.key_id not in revoked and key.created_at <= event.time:
                revoked.add(key.key_id)
    return rows, revoked


def expected_with_late_keys(
    baselines: Mapping[Member, Membership],
    keys: Iterable[KeyFact],
    events: Iterable[MembershipEvent],
) -> tuple[dict[Member, Membership], set[str]]:
    """`expected_state` plus R6: once every event is consumed, a key still live whose member
    ends `removed`, created after the member's latest removal event, is revoked too — unless
    that latest removal is the baseline row's (then no removal event names it: R5's case)."""
    key_list = list(keys)
    event_list = list(events)
    rows, revoked = expected_state(baselines, key_list, event_list)
    for key in key_list:
        member = (key.account_id, key.iam_id)
        row = rows.get(member)
        if key.key_id in revoked or row is None or row.state is not State.REMOVED:
            continue
        removals = sorted(
            (e.time, e.id, e.source)
            for e in event_list
            if e.change is Change.REMOVED and (e.account_id, e.iam_id) == member
        )
        if removals and removals[-1][0] == row.changed_at and key.created_at > removals[-1][0]:
            revoked.add(key.key_id)
    return rows, revoked
