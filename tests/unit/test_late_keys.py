"""The R1 re-check and R6 (docs/design.md) as pure decisions, and the sweep's cursor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from cleanup_worker.adapters.postgres.late_keys import Cursor
from cleanup_worker.domain.events import Change, MembershipEvent
from cleanup_worker.domain.late_keys import (
    group_has_caught_up,
    late_key_removal,
    recheck_removal,
    settle_cutoff,
)
from cleanup_worker.domain.rules import HistoryEntry, Membership, derive_membership, unique_events
from cleanup_worker.service.run.late_keys import advance
from tests.oracle import KeyFact, expected_state, expected_with_late_keys
from tests.unit.test_rules import (
    PROPERTY,
    Member,
    active,
    at,
    baselines_st,
    entry,
    events_st,
    keys_st,
    removed,
)

ADDED, REMOVED = Change.ADDED, Change.REMOVED

# --- R1 re-check -------------------------------------------------------------------------------


def test_recheck_revokes_key_created_before_an_applied_removal() -> None:
    """A live key created at or before a removal's time is R1's: the removal names it."""
    removal = entry(REMOVED, 5, "r")
    assert recheck_removal(at(5), False, [removal]) == removal


def test_recheck_spares_key_created_after_every_removal() -> None:
    """A key created after every removal is not R1's."""
    assert recheck_removal(at(6), False, [entry(REMOVED, 5, "r")]) is None


def test_recheck_ignores_re_adds() -> None:
    """R1 does not look at re-adds, and neither does its re-check."""
    removal = entry(REMOVED, 5, "r")
    assert recheck_removal(at(1), False, [entry(ADDED, 3, "a"), removal, entry(ADDED, 9)]) == (
        removal
    )


def test_recheck_names_the_earliest_covering_removal() -> None:
    """Of several removals that cover the key, the earliest by (time, id) is named."""
    first, later = entry(REMOVED, 4, "r2"), entry(REMOVED, 8, "r1")
    assert recheck_removal(at(2), False, [later, entry(REMOVED, 1, "r0"), first]) == first


def test_recheck_leaves_revoked_key_alone() -> None:
    """A revoked key keeps its first revocation (R4)."""
    assert recheck_removal(at(1), True, [entry(REMOVED, 5, "r")]) is None


# --- R6 ----------------------------------------------------------------------------------------


def test_key_created_after_latest_removal_is_late() -> None:
    """Member still removed, key created after the latest removal: late, named by it."""
    latest = entry(REMOVED, 5, "r2")
    history = [entry(ADDED, 1, "a"), entry(REMOVED, 3, "r1"), latest]
    assert late_key_removal(at(6), False, None, history) == latest


def test_key_created_at_removal_time_is_not_late() -> None:
    """A key created at T is R1's, not R6's."""
    assert late_key_removal(at(5), False, None, [entry(REMOVED, 5, "r")]) is None


def test_key_of_re_added_member_is_not_late() -> None:
    """After a re-add the member is active: no key of theirs is late."""
    history = [entry(REMOVED, 5, "r"), entry(ADDED, 7, "a")]
    assert late_key_removal(at(6), False, None, history) is None


def test_member_removed_only_by_baseline_is_left_to_backfill() -> None:
    """A removal that is a pre-existing row, not a ledger event, is R5's (backfill)."""
    history = [entry(ADDED, 1, "a")]
    assert late_key_removal(at(6), False, removed(3), history) is None


def test_baseline_removal_after_the_events_is_left_to_backfill() -> None:
    """When the latest removal is the baseline's, no event can be named."""
    history = [entry(REMOVED, 1, "r")]
    assert late_key_removal(at(6), False, removed(3), history) is None


def test_late_key_with_active_baseline_before_removal() -> None:
    """A baseline membership before the removal event does not save a later key."""
    removal = entry(REMOVED, 4, "r")
    assert late_key_removal(at(6), False, active(None, 1), [removal]) == removal


def test_revoked_key_is_never_late() -> None:
    """A revoked key is left alone (R4)."""
    assert late_key_removal(at(6), True, None, [entry(REMOVED, 5, "r")]) is None


def test_guard_waits_until_the_group_consumed_past_the_cutoff() -> None:
    """R6 waits until everything produced before created_at + settle is consumed."""
    settle = timedelta(seconds=30)
    created = at(1)
    assert settle_cutoff(created, settle) == created + settle
    assert not group_has_caught_up(created, settle, None)
    assert not group_has_caught_up(created, settle, created + timedelta(seconds=29))
    assert group_has_caught_up(created, settle, created + settle)


# --- against the oracle ------------------------------------------------------------------------


def _history(events: Sequence[MembershipEvent], member: Member) -> list[HistoryEntry]:
    return [HistoryEntry.from_event(e) for e in events if (e.account_id, e.iam_id) == member]


def _run(
    baselines: Mapping[Member, Membership],
    keys: Sequence[KeyFact],
    order: Sequence[MembershipEvent],
    visible_after: Mapping[str, int],
    r1_truth: set[str],
) -> set[str]:
    """The worker with concurrent keys: events applied one at a time in `order`; a key
    becomes visible only after `visible_after[key]` events, so R1 may miss it; a re-check
    runs after every step (and must only ever revoke what R1 would have); once everything is
    consumed, one sweep with R6."""
    revoked = {k.key_id for k in keys if k.revoked}
    applied: list[MembershipEvent] = []
    for step, event in enumerate([*order, None]):
        visible = [k for k in keys if visible_after[k.key_id] <= step]
        for key in visible:
            history = _history(applied, (key.account_id, key.iam_id))
            if recheck_removal(key.created_at, key.key_id in revoked, history) is not None:
                assert key.key_id in r1_truth, "the re-check revoked a key R1 would not"
                revoked.add(key.key_id)
        if event is None:
            break
        applied.append(event)
        if event.change is REMOVED:  # R1 over the keys visible now
            for key in visible:
                mine = (key.account_id, key.iam_id) == (event.account_id, event.iam_id)
                if mine and key.created_at <= event.time:
                    revoked.add(key.key_id)
    for key in keys:
        member = (key.account_id, key.iam_id)
        history = _history(applied, member)
        if late_key_removal(key.created_at, key.key_id in revoked, baselines.get(member), history):
            revoked.add(key.key_id)
    return revoked


@PROPERTY
@given(baselines_st, keys_st, events_st, st.data())
def test_recheck_and_r6_match_the_oracle(
    baselines: dict[Member, Membership],
    keys: list[KeyFact],
    events: list[MembershipEvent],
    data: st.DataObject,
) -> None:
    """Whatever order the events come in and whenever keys become visible, R1 with its
    re-check and R6 end in the oracle's revoked set, and the re-check never goes beyond R1."""
    order, _ = unique_events(data.draw(st.permutations(events)))
    visible_after = {k.key_id: data.draw(st.integers(0, len(order)), label=k.key_id) for k in keys}
    _, r1_truth = expected_state(baselines, keys, events)
    revoked = _run(baselines, keys, order, visible_after, r1_truth)
    assert revoked == expected_with_late_keys(baselines, keys, events)[1]


@PROPERTY
@given(baselines_st, keys_st, events_st)
def test_late_keys_are_outside_r1(
    baselines: dict[Member, Membership], keys: list[KeyFact], events: list[MembershipEvent]
) -> None:
    """No key is both R1's (created at or before a removal) and late (after the latest)."""
    for key in keys:
        member = (key.account_id, key.iam_id)
        history = _history(events, member)
        recheck = recheck_removal(key.created_at, key.revoked, history)
        late = late_key_removal(key.created_at, key.revoked, baselines.get(member), history)
        assert recheck is None or late is None
        if late is not None:
            row = derive_membership(baselines.get(member), history)
            assert row is not None
            assert row.changed_at == late.time


# --- the sweep's cursor ------------------------------------------------------------------------

START = Cursor(at(0), at(0), None, None, None, None, None, 0)


def test_first_sweep_takes_a_probe_and_keeps_the_window() -> None:
    """Without a probe, the sweep notes the running transactions and moves nothing."""
    cursor = advance(START, at(1), frozenset({"3/7"}))
    assert (cursor.window_start, cursor.horizon) == (at(0), at(0))
    assert (cursor.probe_at, cursor.probe_horizon, cursor.probe_vxids) == (at(1), at(0), ("3/7",))


def test_probe_still_running_holds_the_cursor() -> None:
    """While a transaction of the probe runs, neither horizon nor window moves."""
    probed = advance(START, at(1), frozenset({"3/7", "4/2"}))
    cursor = advance(probed, at(2), frozenset({"4/2", "5/1"}))
    assert (cursor.window_start, cursor.horizon, cursor.probe_at) == (at(0), at(0), at(1))
    assert cursor.swept_at == at(2)


def test_finished_probe_moves_horizon_then_window() -> None:
    """A finished probe moves the horizon to its time, and the window to the horizon it saw."""
    first = advance(START, at(1), frozenset({"3/7"}))
    second = advance(first, at(2), frozenset({"5/1"}))
    assert (second.window_start, second.horizon) == (at(0), at(1))
    third = advance(second, at(3), frozenset())
    assert (third.window_start, third.horizon) == (at(1), at(2))
    assert (third.probe_at, third.probe_horizon, third.probe_vxids) == (at(3), at(2), ())
