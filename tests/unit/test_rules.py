"""The rules R1–R5 ("Rules", docs/design.md): examples of each, then order independence,
property-based."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup_worker.domain.events import Change, MembershipEvent
from cleanup_worker.domain.rules import (
    HistoryEntry,
    Membership,
    OrphanReason,
    State,
    derive_membership,
    latest_removals,
    orphan_reason,
    removal_revokes,
    unique_events,
)
from tests.oracle import KeyFact, expected_state

ADDED, REMOVED = Change.ADDED, Change.REMOVED
ACTIVE, GONE = State.ACTIVE, State.REMOVED
Member = tuple[str, str]


def at(minute: int) -> datetime:
    """A time on the test day, `minute` minutes after 14:00 UTC."""
    return datetime(2026, 11, 26, 14, 0, tzinfo=UTC) + timedelta(minutes=minute)


def entry(change: Change, minute: int, event_id: str = "e", source: str = "/s") -> HistoryEntry:
    """A history entry at `at(minute)`."""
    return HistoryEntry(change=change, time=at(minute), event_id=event_id, source=source)


def event(
    change: Change,
    time: datetime,
    event_id: str,
    member: Member = ("a1", "u1"),
    source: str = "/s",
) -> MembershipEvent:
    """A membership event of `member`."""
    return MembershipEvent(
        source=source,
        id=event_id,
        type=f"account.member.{change}",
        change=change,
        time=time,
        account_id=member[0],
        iam_id=member[1],
    )


def active(since: int | None, changed: int) -> Membership:
    """An active row."""
    return Membership(ACTIVE, None if since is None else at(since), at(changed))


def removed(changed: int) -> Membership:
    """A removed row."""
    return Membership(GONE, None, at(changed))


# --- R3: derive_membership -------------------------------------------------------------------


def test_nothing_known_is_no_row() -> None:
    """Without a baseline or any event there is no membership row."""
    assert derive_membership(None, []) is None


def test_added_makes_active_since_its_time() -> None:
    """An added makes the member active since the event's time."""
    assert derive_membership(None, [entry(ADDED, 1)]) == active(1, 1)


def test_removed_makes_removed_without_member_since() -> None:
    """A removed makes the member removed with a null member_since."""
    assert derive_membership(None, [entry(ADDED, 1, "a"), entry(REMOVED, 2, "b")]) == removed(2)


def test_a_lone_removed_makes_removed_at_its_time() -> None:
    """A member whose only event is a removal is removed as of that event."""
    assert derive_membership(None, [entry(REMOVED, 2)]) == removed(2)


@pytest.mark.parametrize("change", [ADDED, REMOVED])
def test_a_lone_event_derives_as_it_does_repeated(change: Change) -> None:
    """The one-event shortcut agrees with the general derivation (a repeat takes that path)."""
    lone = entry(change, 4, "x")
    assert derive_membership(None, [lone]) == derive_membership(None, [lone, lone])


def test_re_added_user_has_member_since_of_re_add() -> None:
    """After added, removed, added, member_since is the time of the re-add."""
    history = [entry(ADDED, 1, "a"), entry(REMOVED, 2, "b"), entry(ADDED, 3, "c")]
    assert derive_membership(None, history) == active(3, 3)


def test_resent_added_keeps_member_since() -> None:
    """A later added of an active member moves changed_at but not member_since."""
    assert derive_membership(None, [entry(ADDED, 1, "a"), entry(ADDED, 3, "b")]) == active(1, 3)


def test_resent_added_never_moves_old_members_member_since() -> None:
    """A re-sent added never moves the member_since of a pre-existing active row."""
    assert derive_membership(active(1, 2), [entry(ADDED, 5)]) == active(1, 5)


def test_older_event_never_overwrites_newer() -> None:
    """An added older than the latest removed leaves the member removed."""
    history = [entry(REMOVED, 5, "a"), entry(ADDED, 3, "b")]
    assert derive_membership(None, history) == removed(5)


def test_baseline_alone_is_the_row() -> None:
    """With no events, the row is the baseline itself."""
    assert derive_membership(active(1, 2), []) == active(1, 2)
    assert derive_membership(removed(2), []) == removed(2)


def test_baseline_removed_older_than_added() -> None:
    """A removed baseline older than an added gives way to it."""
    assert derive_membership(removed(2), [entry(ADDED, 3)]) == active(3, 3)


def test_baseline_removed_newer_than_added() -> None:
    """A removed baseline newer than an added keeps the member removed."""
    assert derive_membership(removed(4), [entry(ADDED, 3)]) == removed(4)


def test_null_member_since_baseline_stays_since_always() -> None:
    """An active baseline with a null member_since keeps it null through any added."""
    history = [entry(ADDED, 1, "a"), entry(ADDED, 5, "b")]
    assert derive_membership(active(None, 2), history) == active(None, 5)


def test_null_member_since_baseline_precedes_every_event() -> None:
    """A "since always" baseline orders before even the oldest removal."""
    history = [entry(REMOVED, 0, "a"), entry(ADDED, 1, "b")]
    assert derive_membership(active(None, 9), history) == active(1, 1)


def test_baseline_is_ordered_by_member_since() -> None:
    """An active baseline sits at its member_since, so a later removal wins over it."""
    assert derive_membership(active(1, 9), [entry(REMOVED, 5)]) == removed(5)


def test_latest_baseline_keeps_its_changed_at() -> None:
    """When the baseline is the latest (pseudo-)event, changed_at is the baseline's."""
    assert derive_membership(active(3, 9), [entry(REMOVED, 1)]) == active(3, 9)


def test_earlier_added_sets_member_since_before_baseline() -> None:
    """An added before an active baseline's member_since becomes the member_since."""
    assert derive_membership(active(3, 9), [entry(ADDED, 1)]) == active(1, 9)


def test_baseline_precedes_events_at_equal_time() -> None:
    """At an equal time, the baseline pseudo-event orders before the real event."""
    assert derive_membership(removed(3), [entry(ADDED, 3)]) == active(3, 3)
    assert derive_membership(active(3, 3), [entry(REMOVED, 3)]) == removed(3)


def test_equal_times_tie_broken_by_event_id() -> None:
    """At an equal time, the greater event id is the later event."""
    assert derive_membership(None, [entry(REMOVED, 3, "a"), entry(ADDED, 3, "b")]) == active(3, 3)
    assert derive_membership(None, [entry(ADDED, 3, "a"), entry(REMOVED, 3, "b")]) == removed(3)


def test_equal_time_and_id_tie_broken_by_source() -> None:
    """At an equal time and event id, the greater source is the later event."""
    history = [entry(REMOVED, 3, "e", "/a"), entry(ADDED, 3, "e", "/b")]
    assert derive_membership(None, history) == active(3, 3)


def test_conflicting_entries_with_one_identity_resolve_to_removed() -> None:
    """Two entries sharing time, id and source but not the change resolve to removed."""
    history = [entry(ADDED, 3), entry(REMOVED, 3)]
    assert derive_membership(None, history) == removed(3)
    assert derive_membership(None, reversed(history)) == removed(3)


def test_duplicate_entries_do_not_matter() -> None:
    """Repeating an entry changes nothing."""
    history = [entry(ADDED, 1, "a"), entry(REMOVED, 2, "b"), entry(ADDED, 3, "c")]
    assert derive_membership(None, history + history[::-1]) == derive_membership(None, history)


def test_history_entry_from_event() -> None:
    """A history entry keeps an event's change, time and identity, and its order key."""
    e = event(REMOVED, at(2), "e7", source="/acc")
    h = HistoryEntry.from_event(e)
    assert h == HistoryEntry(REMOVED, at(2), "e7", "/acc")
    assert h.order_key == e.order_key == (at(2), "e7", "/acc")


# --- R1 / R4: removal_revokes ----------------------------------------------------------------


def test_removal_revokes_key_created_before() -> None:
    """R1: a removal revokes an unrevoked key created before it."""
    assert removal_revokes(at(1), False, at(2))


def test_removal_revokes_key_created_at_removal_time() -> None:
    """R1: a key created exactly at the removal time is revoked."""
    assert removal_revokes(at(2), False, at(2))


def test_removal_spares_key_created_after() -> None:
    """R1: a key created after the removal belongs to a later membership."""
    assert not removal_revokes(at(3), False, at(2))


def test_removal_leaves_revoked_key_alone() -> None:
    """R4: an already revoked key is not revoked again."""
    assert not removal_revokes(at(1), True, at(2))


# --- R5: orphan_reason -----------------------------------------------------------------------


def test_orphan_without_membership() -> None:
    """R5: a key of a member with no membership row is orphaned."""
    assert orphan_reason(at(1), False, None) is OrphanReason.NO_MEMBERSHIP


def test_orphan_of_removed_membership() -> None:
    """R5: a key of a removed member is orphaned."""
    assert orphan_reason(at(5), False, removed(2)) is OrphanReason.MEMBERSHIP_REMOVED


def test_orphan_created_before_member_since() -> None:
    """R5: a key created before member_since belongs to an earlier membership."""
    reason = orphan_reason(at(1), False, active(2, 2))
    assert reason is OrphanReason.CREATED_BEFORE_MEMBER_SINCE


def test_key_of_active_member_survives() -> None:
    """R5: a key created after member_since of an active member is not orphaned."""
    assert orphan_reason(at(3), False, active(2, 2)) is None


def test_key_created_at_member_since_survives() -> None:
    """R5: a key created exactly at member_since is not orphaned."""
    assert orphan_reason(at(2), False, active(2, 2)) is None


def test_null_member_since_orphans_nothing() -> None:
    """R5: an active member since always keeps every key."""
    assert orphan_reason(at(0), False, active(None, 2)) is None


@pytest.mark.parametrize("membership", [None, removed(2), active(2, 2)])
def test_revoked_key_is_never_orphaned(membership: Membership | None) -> None:
    """R5: an already revoked key is never an orphan."""
    assert orphan_reason(at(1), True, membership) is None


# --- batching helpers ------------------------------------------------------------------------


def test_latest_removals_picks_latest_per_member() -> None:
    """Per member, the latest removal is chosen and added events are ignored."""
    u1, u2 = ("a1", "u1"), ("a1", "u2")
    events = [
        event(REMOVED, at(3), "x", u1),
        event(REMOVED, at(1), "y", u1),
        event(ADDED, at(9), "z", u1),
        event(REMOVED, at(2), "w", u2),
        event(ADDED, at(4), "v", ("a2", "u1")),
    ]
    chosen = latest_removals(events)
    assert {m: e.id for m, e in chosen.items()} == {u1: "x", u2: "w"}


def test_latest_removals_breaks_ties_by_order_key() -> None:
    """Removals at an equal time are ordered by event id."""
    events = [event(REMOVED, at(3), "b"), event(REMOVED, at(3), "a")]
    assert latest_removals(events)[("a1", "u1")].id == "b"


def test_unique_events_keeps_first_in_order() -> None:
    """Repeats of a (source, id) are dropped and counted; the rest keep their order."""
    a, b, c = event(ADDED, at(1), "a"), event(ADDED, at(2), "b"), event(REMOVED, at(3), "c")
    assert unique_events([b, a, b, c, a, b]) == ([b, a, c], 3)


def test_unique_events_identity_includes_source() -> None:
    """The same id from two sources is two events."""
    one, other = event(ADDED, at(1), "a", source="/x"), event(ADDED, at(1), "a", source="/y")
    assert unique_events([one, other]) == ([one, other], 0)


# --- order independence, property-based ------------------------------------------------------

MEMBERS: list[Member] = [("a1", "u1"), ("a1", "u2"), ("a2", "u1")]
INSTANTS = [at(m) for m in range(5)]
OFFSETS = [UTC, timezone(timedelta(hours=2))]  # one instant, spelled in two offsets

times = st.builds(
    lambda t, tz: t.astimezone(tz), st.sampled_from(INSTANTS), st.sampled_from(OFFSETS)
)
events_st = st.lists(
    st.builds(
        event,
        st.sampled_from(Change),
        times,
        st.sampled_from([f"e{i}" for i in range(8)]),
        st.sampled_from(MEMBERS),
        st.sampled_from(["/s1", "/s2"]),
    ),
    unique_by=lambda e: (e.source, e.id),  # one identity, one content: duplicates are copies
    max_size=14,
)
memberships = st.one_of(
    st.builds(Membership, st.just(ACTIVE), st.none() | times, times),
    st.builds(Membership, st.just(GONE), st.none(), times),
)
baselines_st = st.dictionaries(st.sampled_from(MEMBERS), memberships)
keys_st = st.lists(
    st.builds(
        KeyFact,
        st.sampled_from([f"k{i}" for i in range(10)]),
        st.sampled_from([m[0] for m in MEMBERS]),
        st.sampled_from([m[1] for m in MEMBERS]),
        times,
        st.booleans(),
    ),
    unique_by=lambda k: k.key_id,
    max_size=8,
)
history_entries = st.builds(  # one member's; identities may repeat with other contents
    HistoryEntry, st.sampled_from(Change), times, st.sampled_from(["e1", "e2", "e3"]), st.just("/s")
)
PROPERTY = settings(max_examples=300, deadline=None, database=None)


@st.composite
def deliveries(draw: st.DrawFn, events: Sequence[MembershipEvent]) -> list[list[MembershipEvent]]:
    """The events in a random order with random repeats, cut into random batches."""
    repeats = draw(st.lists(st.sampled_from(events), max_size=6)) if events else []
    stream = draw(st.permutations([*events, *repeats]))
    cuts = draw(st.lists(st.booleans(), min_size=len(stream), max_size=len(stream)))
    batches: list[list[MembershipEvent]] = [[]]
    for e, cut in zip(stream, cuts, strict=True):
        batches[-1].append(e)
        if cut:
            batches.append([])
    return [batch for batch in batches if batch]


def run_worker(
    baselines: Mapping[Member, Membership],
    keys: Iterable[KeyFact],
    batches: Iterable[Sequence[MembershipEvent]],
    *,
    ledger: bool,
) -> tuple[dict[Member, Membership], list[set[str]]]:
    """The worker's incremental path; returns the final rows and the revoked set after each batch.

    With `ledger`, events already seen in an earlier batch are skipped, as the ledger does;
    without it they are applied again, which must be harmless.
    """
    key_list = list(keys)
    rows = dict(baselines)
    revoked = {k.key_id for k in key_list if k.revoked}
    history: dict[Member, set[HistoryEntry]] = {}
    seen: set[tuple[str, str]] = set()
    snapshots = [set(revoked)]
    for batch in batches:
        fresh, dropped = unique_events(batch)
        assert len(fresh) + dropped == len(batch)
        if ledger:
            fresh = [e for e in fresh if (e.source, e.id) not in seen]
            seen.update((e.source, e.id) for e in fresh)
        for e in fresh:
            history.setdefault((e.account_id, e.iam_id), set()).add(HistoryEntry.from_event(e))
        for member, removal in latest_removals(fresh).items():
            for k in key_list:
                mine = (k.account_id, k.iam_id) == member
                if mine and removal_revokes(k.created_at, k.key_id in revoked, removal.time):
                    revoked.add(k.key_id)
        for member in {(e.account_id, e.iam_id) for e in fresh}:
            row = derive_membership(baselines.get(member), history[member])
            assert row is not None
            rows[member] = row
        snapshots.append(set(revoked))
    return rows, snapshots


@PROPERTY
@given(baselines_st, keys_st, events_st, st.booleans(), st.data())
def test_incremental_path_matches_oracle(
    baselines: dict[Member, Membership],
    keys: list[KeyFact],
    events: list[MembershipEvent],
    ledger: bool,
    data: st.DataObject,
) -> None:
    """Any order, repetition and batching of the events ends in the oracle's state."""
    batches = data.draw(deliveries(events))
    rows, snapshots = run_worker(baselines, keys, batches, ledger=ledger)
    assert (rows, snapshots[-1]) == expected_state(baselines, keys, events)


@PROPERTY
@given(baselines_st, keys_st, events_st, st.data())
def test_revoked_keys_stay_revoked(
    baselines: dict[Member, Membership],
    keys: list[KeyFact],
    events: list[MembershipEvent],
    data: st.DataObject,
) -> None:
    """R4: the set of revoked keys only grows, whatever the events and their order."""
    _, snapshots = run_worker(baselines, keys, data.draw(deliveries(events)), ledger=False)
    assert all(before <= after for before, after in pairwise(snapshots))


@PROPERTY
@given(st.none() | memberships, st.lists(history_entries, max_size=12), st.data())
def test_derive_membership_ignores_order_and_repetition(
    baseline: Membership | None, history: list[HistoryEntry], data: st.DataObject
) -> None:
    """R3 depends on the set of history entries, not their order or repetition."""
    repeats = data.draw(st.lists(st.sampled_from(history), max_size=5)) if history else []
    shuffled = data.draw(st.permutations([*history, *repeats]))
    assert derive_membership(baseline, shuffled) == derive_membership(baseline, history)


@PROPERTY
@given(times, st.booleans(), times, times)
def test_removal_revokes_grows_with_removal_time(
    created_at: datetime, revoked: bool, earlier: datetime, later: datetime
) -> None:
    """R1: whatever a removal revokes, any later removal of the member revokes too."""
    earlier, later = sorted([earlier, later])
    if removal_revokes(created_at, revoked, earlier):
        assert removal_revokes(created_at, revoked, later)
