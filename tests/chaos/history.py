"""The populations a chaos run starts from, made from its seed alone (no I/O here).

The burst and the legacy accounts are dated in the past (around testkit.events.T0) and
arrive in a random order, so the worker passes through states that never were: a member shown
removed while the re-add that came before one of their keys has not arrived yet. R6 acts on
such states (a key "created after the latest removal" whose records all look consumed), which
is right for keys made in real time and wrong for a history replayed out of order. So no burst
key comes after its member's last removal: R6 may then revoke a key early, never one that R1
does not revoke in the end. R6 proper is the live members' part (live.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime

from cleanup_worker.domain.events import Change, Member, MembershipEvent
from cleanup_worker.domain.rules import Membership, State
from testkit.events import T0, at, binary, event, structured

# value, headers, and the event it carries (None: a malformed record)
Shot = tuple[bytes, list[tuple[str, bytes]], MembershipEvent | None]
LEGACY_ACCOUNTS = ("acct-legacy-0", "acct-legacy-1")


@dataclass(frozen=True)
class Population:
    """What the run seeds and publishes, and what the oracle is told."""

    events: list[MembershipEvent]  # burst and legacy events, without duplicates
    records: list[Shot]  # what is published: events, duplicates, malformed, shuffled
    malformed: list[bytes]
    keys: list[tuple[str, str, datetime]]  # (account, user, created_at) seeded before the run
    baselines: dict[Member, Membership]  # membership rows seeded before the run


def population(rng: random.Random) -> Population:
    burst_members = [(f"acct-{a}", f"user-{u}") for a in range(5) for u in range(12)]
    legacy_members = [(a, f"user-{u}") for a in LEGACY_ACCOUNTS for u in range(10)]
    touched = burst_members + rng.sample(legacy_members, len(legacy_members) // 2)
    events = [
        event(rng.choice(["added", "removed"]), account, iam, at(rng.randrange(0, 120, 5)))
        for _ in range(450)
        for account, iam in [rng.choice(touched)]
    ]
    # Keys of the burst fall anywhere among their member's events up to the last removal
    # (R1 compares the times, equal ones too); see the module docstring for why not later.
    latest: dict[Member, int] = {}  # member -> minute of its last removal
    for e in events:
        if e.change is Change.REMOVED:
            minute = int((e.time - T0).total_seconds()) // 60
            latest[e.member] = max(minute, latest.get(e.member, minute))
    keys = [
        (a, u, at(rng.randrange(-5, latest.get((a, u), 120) + 1, 5)))
        for a, u in burst_members
        for _ in range(2)
    ]
    # Legacy keys predate every event of their member, so whether R5 orphans one is the same
    # in every state the worker passes through: the concurrent backfill then has one answer.
    keys += [(a, u, at(rng.randrange(-120, -5, 5))) for a, u in legacy_members for _ in range(2)]
    baselines = {member: _baseline(rng) for member in legacy_members}
    records: list[Shot] = [
        (*(structured(e) if rng.random() < 0.5 else binary(e)), e) for e in events
    ]
    records += [(*structured(e), e) for e in rng.sample(events, 60)]  # duplicates
    malformed = [b"chaos garbage %d" % i for i in range(10)]
    records += [(value, [], None) for value in malformed]
    rng.shuffle(records)
    return Population(events, records, malformed, keys, baselines)


def _baseline(rng: random.Random) -> Membership:
    """A row from before the worker: active since always, active since a date, or removed."""
    kind = rng.choice(["always", "since", "removed"])
    if kind == "always":
        return Membership(State.ACTIVE, None, at(-130))
    if kind == "since":
        return Membership(State.ACTIVE, at(-50), at(-50))
    return Membership(State.REMOVED, None, at(-60))


def orphaned_by_baseline(created_at: datetime, baseline: Membership) -> bool:
    """R5 over a legacy key and its member's row as seeded (see `population` for why that
    row is enough)."""
    if baseline.state is State.REMOVED:
        return True
    return baseline.member_since is not None and created_at < baseline.member_since
