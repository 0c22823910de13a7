"""The body of one batch transaction: every statement a batch runs, in the order that makes
it safe beside other replicas. R1 and R3 are applied here through the pure rules."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cleanup_worker.adapters.postgres import keys, memberships
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.domain.events import Change, Member, MembershipEvent
from cleanup_worker.domain.rules import (
    HistoryEntry,
    Membership,
    derive_membership,
    latest_removals,
)


@dataclass(frozen=True, slots=True)
class Applied:
    """What the transaction changed."""

    fresh: list[MembershipEvent]  # events applied now (new to the ledger, or re-applied)
    keys_revoked: int
    memberships_changed: int


async def apply_events(
    conn: Connection,
    events: Sequence[MembershipEvent],
    *,
    reprocess: bool,
    announce: bool,
    note_late_keys: bool = False,
) -> Applied:
    """Runs inside the caller's transaction, on a connection of a batch pool
    (`create_pool(batches=True)`: its planner settings keep these statements on indexes).
    `events` hold no repeated identity. `announce`:
    write a revocation notice to the outbox for each key revoked ("Revocation notices",
    docs/design.md). `note_late_keys`: note the keys a removal leaves for R6 to judge."""
    members = sorted({event.member for event in events})
    # First the member locks, so that every later statement sees whatever another replica
    # committed for these members before we got them.
    await memberships.lock_members(conn, members)
    recorded = await memberships.record_events(conn, members, events)
    fresh = list(events) if reprocess else [e for e in events if e.identity in recorded.new]
    removals = latest_removals(e for e in fresh if e.change is Change.REMOVED)
    # Keys created after a removal that arrives late are R6's to judge (the sweep).
    revoked = await keys.revoke_for_removals(
        conn, list(removals.values()), announce=announce, note_late_keys=note_late_keys
    )
    rows = await _derive_rows(
        conn, fresh, recorded.baselines, recorded.had_history, reprocess=reprocess
    )
    changed = await memberships.write_memberships(conn, rows)
    return Applied(fresh, revoked, changed)


async def _derive_rows(
    conn: Connection,
    fresh: Sequence[MembershipEvent],
    captured: Mapping[Member, Membership],
    had_history: set[Member],
    *,
    reprocess: bool,
) -> dict[Member, Membership]:
    """R3 for every member with a fresh event. A member whose first events are in this batch
    has no history to read: its baseline (if any) was captured just now."""
    in_batch: defaultdict[Member, list[HistoryEntry]] = defaultdict(list)
    for event in fresh:
        in_batch[event.member].append(HistoryEntry.from_event(event))
    known = sorted(in_batch if reprocess else had_history & in_batch.keys())
    baselines, histories = await memberships.load_histories(conn, known)
    rows = {}
    for member, entries in in_batch.items():
        if member in histories:
            row = derive_membership(baselines.get(member), histories[member])
        else:
            row = derive_membership(captured.get(member), entries)
        if row is not None:
            rows[member] = row
    return rows
