"""The end of a chaos run: the database and the topics against the oracle, and the exposure."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from cleanup_worker.domain.events import Member, MembershipEvent
from cleanup_worker.domain.rules import Membership
from tests.chaos.history import orphaned_by_baseline
from tests.oracle import KeyFact, expected_state, expected_with_late_keys


@dataclass(frozen=True)
class Expected:
    rows: dict[Member, Membership]
    revoked: set[str]


def expected(
    keys: list[KeyFact],
    baselines: dict[Member, Membership],
    events: list[MembershipEvent],
    live_events: list[MembershipEvent],
) -> Expected:
    """R1-R4 over every event; R6 over the live members (the others' keys predate R6's
    window); R5 over the legacy members' keys, which the backfill revokes."""
    rows, revoked = expected_state(baselines, keys, events + live_events)
    live_members = {e.member for e in live_events}
    _, late = expected_with_late_keys(
        {}, [k for k in keys if (k.account_id, k.iam_id) in live_members], live_events
    )
    revoked |= late
    for key in keys:
        baseline = baselines.get((key.account_id, key.iam_id))
        if baseline is not None and orphaned_by_baseline(key.created_at, baseline):
            revoked.add(key.key_id)
    return Expected(rows, revoked)


async def key_facts(db: Any) -> list[KeyFact]:
    """Every key as the database has it: the live ones were created during the run."""
    return [
        KeyFact(str(r["id"]), r["account_id"], r["iam_id"], r["created_at"], revoked=False)
        for r in await db.fetch("SELECT id, account_id, iam_id, created_at FROM api_keys")
    ]


def differences(
    want: Expected,
    revoked: set[str],
    rows: dict[Member, Membership],
    announced: set[str],
    letters: set[bytes],
    malformed: list[bytes],
) -> list[str]:
    """What is wrong, in words; empty when the run is exact."""
    wrong = []
    if revoked != want.revoked:
        wrong.append(
            f"revoked set: {len(revoked - want.revoked)} revoked that should not be, "
            f"{len(want.revoked - revoked)} live that should be revoked; for instance "
            + ", ".join(sorted(revoked ^ want.revoked)[:5])
        )
    if rows != want.rows:
        differ = {m for m in rows.keys() | want.rows.keys() if rows.get(m) != want.rows.get(m)}
        wrong.append(f"membership rows: {len(differ)} members differ")
    if announced != revoked:
        wrong.append(
            f"notices: {len(revoked - announced)} revoked keys not announced, "
            f"{len(announced - revoked)} announced that are not revoked"
        )
    if missing := set(malformed) - letters:
        wrong.append(f"{len(missing)} malformed records not dead-lettered")
    return wrong


def announced_keys(notices: list[Any]) -> dict[str, float]:
    """Key id -> when its first notice was appended (the record's timestamp, seconds)."""
    first: dict[str, float] = {}
    for record in notices:
        key_id = json.loads(record.value)["data"]["key_id"]
        first[key_id] = min(first.get(key_id, record.timestamp / 1000), record.timestamp / 1000)
    return first


async def exposure(
    db: Any, origin: dict[str, float], announced: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Percentiles of the delay from each removal (its event time for the live members, its
    publication for the back-dated ones) to the revocation and to the notice, over the keys
    R1 revoked (R6 keys did not exist when the removal happened)."""
    revoked = await db.fetch(
        "SELECT id, split_part(revoked_by, '#', 2) AS event_id, "
        "extract(epoch FROM revoked_at)::float8 AS at FROM api_keys "
        "WHERE revocation_reason = 'member_removed'"
    )
    to_revoked, to_announced = [], []
    for r in revoked:
        start = origin.get(r["event_id"])
        if start is None:
            continue
        to_revoked.append(r["at"] - start)
        if (notice := announced.get(str(r["id"]))) is not None:
            to_announced.append(notice - start)
    return {"revoked": percentiles(to_revoked), "announced": percentiles(to_announced)}


def percentiles(delays: list[float]) -> dict[str, float]:
    if not delays:
        return {"keys": 0}
    ordered = sorted(delays)
    # Nearest rank, so that no percentile exceeds the largest delay seen.
    q = [ordered[min(len(ordered) - 1, len(ordered) * p // 100)] for p in range(101)]
    return {
        "keys": len(ordered),
        "p50_s": round(q[50], 3),
        "p99_s": round(q[99], 3),
        "max_s": round(ordered[-1], 3),
    }


def late_key_delays(
    revoked_at: dict[uuid.UUID, float], committed: dict[uuid.UUID, float], ids: set[uuid.UUID]
) -> dict[str, float]:
    """Commit -> revoked, for the R1 re-check's or R6's keys."""
    return percentiles([revoked_at[k] - committed[k] for k in ids if k in revoked_at])
