"""`cleanup-worker explain`: one member's applied history and, for each of their keys, its fate
and the rule behind it, in words (docs/operations.md, "Explain").

The facts come from one read-only snapshot (adapters/postgres/explain.py); this module only
reads them: which rule revoked a key is told apart by what the revocation left behind
(reason, `revoked_by`, and whether it committed with the removal's ledger row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cleanup_worker.adapters.postgres import explain as sql
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.domain.rules import Membership as MembershipRow
from cleanup_worker.domain.rules import OrphanReason, State, orphan_reason
from cleanup_worker.errors import NotFound


@dataclass(frozen=True, slots=True)
class KeyFate:
    key_id: str  # as text, whatever the key table's id type
    name: str
    created_at: datetime
    revoked_at: datetime | None
    status: str  # revoked | live | live_orphaned | waiting_r6 | other_state
    rule: str  # R1 | R1 re-check | R5 | R6 | other | none
    why: str
    notice: str
    alarm: str | None = None  # a live key whose owner is removed (or otherwise orphaned)


@dataclass(frozen=True, slots=True)
class Explanation:
    account_id: str
    iam_id: str
    state: str | None
    member_since: datetime | None
    changed_at: datetime | None
    baseline: dict[str, Any] | None
    events: list[dict[str, Any]]
    keys: list[KeyFate] = field(default_factory=list)

    @property
    def alarms(self) -> list[str]:
        return [k.alarm for k in self.keys if k.alarm]


def _at(moment: datetime | None) -> str:
    return moment.isoformat() if moment else "-"


async def explain_member(
    conn: Connection, account_id: str, iam_id: str, *, notices_on: bool
) -> Explanation:
    facts = await sql.member_facts(conn, account_id, iam_id)
    if not (facts["events"] or facts["baseline"] or facts["membership"] or facts["keys"]):
        raise NotFound(f"member {account_id}/{iam_id} is unknown: no event, row, or key")
    return _explain(account_id, iam_id, facts, notices_on)


async def explain_key(conn: Connection, key_id: str, *, notices_on: bool) -> Explanation:
    member = await sql.member_of_key(conn, key_id)
    if member is None:
        raise NotFound(f"key {key_id} is unknown: no such id in the key table")
    facts = await sql.member_facts(conn, *member, key_id=key_id)
    return _explain(*member, facts, notices_on)


def _explain(account_id: str, iam_id: str, facts: dict[str, Any], notices: bool) -> Explanation:
    row = facts["membership"]
    membership = (
        MembershipRow(State(row["state"]), row["member_since"], row["changed_at"]) if row else None
    )
    fates = [_fate(key, membership, facts, notices) for key in facts["keys"]]
    return Explanation(
        account_id,
        iam_id,
        row["state"] if row else None,
        row["member_since"] if row else None,
        row["changed_at"] if row else None,
        facts["baseline"],
        facts["events"],
        fates,
    )


def _notice(key: dict[str, Any], facts: dict[str, Any], notices: bool) -> str:
    if key["state"] == "other":
        return "none (neither live nor revoked)"
    if key["state"] == "live":
        return "none (live)"
    queued = facts["outbox"].get(key["id"])
    if queued is not None:
        return f"still in the outbox (queued {_at(queued)}), not yet acknowledged by the broker"
    if not notices:
        return "none: notices are off (CLEANUP_REVOCATIONS_TOPIC unset)"
    return "published (no outbox row left; or revoked while notices were off)"


def _fate(
    key: dict[str, Any], membership: MembershipRow | None, facts: dict[str, Any], notices: bool
) -> KeyFate:
    created = key["created_at"]
    base = {
        "key_id": key["id"],
        "name": key["name"],
        "created_at": created,
        "revoked_at": key["revoked_at"],
        "notice": _notice(key, facts, notices),
    }
    if key["state"] == "revoked":
        rule, why = _revoked_why(key, facts)
        return KeyFate(**base, status="revoked", rule=rule, why=why)
    if key["state"] == "other":
        why = "left alone: the key table marks it neither live nor revoked (e.g. expired)"
        return KeyFate(**base, status="other_state", rule="none", why=why)
    reason = orphan_reason(created, False, membership)
    if reason is None:
        assert membership is not None  # no membership row orphans the key
        if membership.member_since is not None and any(
            e["change"] == "removed" for e in facts["events"]
        ):
            why = (
                f"live: created {_at(created)}, after the re-add at {_at(membership.member_since)}"
            )
        else:
            why = f"live: the member is active (member since {_at(membership.member_since)})"
        return KeyFate(**base, status="live", rule="none", why=why)
    return _orphaned_live(key, reason, membership, facts, base)


def _orphaned_live(
    key: dict[str, Any],
    reason: OrphanReason,
    membership: MembershipRow | None,
    facts: dict[str, Any],
    base: dict[str, Any],
) -> KeyFate:
    created = key["created_at"]
    if reason is OrphanReason.NO_MEMBERSHIP:
        why = "live: the worker knows no membership for its owner (R5 would orphan it)"
        alarm = f"LIVE KEY {key['id']} WITHOUT A KNOWN MEMBERSHIP: run `cleanup-worker backfill`"
        return KeyFate(**base, status="live_orphaned", rule="none", why=why, alarm=alarm)
    assert membership is not None
    if reason is OrphanReason.CREATED_BEFORE_MEMBER_SINCE:
        why = (
            f"live, but created {_at(created)}, before the current membership began at "
            f"{_at(membership.member_since)}: R5 orphans it (an earlier membership's key)"
        )
        alarm = f"LIVE KEY {key['id']} OF AN EARLIER MEMBERSHIP: run `cleanup-worker backfill`"
        return KeyFate(**base, status="live_orphaned", rule="none", why=why, alarm=alarm)
    removed_at = membership.changed_at
    alarm = f"LIVE KEY {key['id']} OF A REMOVED MEMBER (removed {_at(removed_at)})"
    noted = facts["candidates"].get(key["id"])
    if noted is not None and created > removed_at:
        sweep = facts["sweep"] or {}
        blocked = sweep.get("r6_blocked_since")
        why = (
            f"waiting for R6: created {_at(created)}, after the removal at {_at(removed_at)}; "
            "it is revoked once the group has consumed every record produced before "
            f"{_at(created)} plus the settle delay"
            + (f" (the group has been behind since {_at(blocked)})" if blocked else "")
        )
        return KeyFate(**base, status="waiting_r6", rule="R6", why=why, alarm=alarm)
    if created <= removed_at:
        why = (
            f"live, but created {_at(created)}, at or before the removal at {_at(removed_at)}: "
            "R1 (or its re-check) should have revoked it; run `cleanup-worker backfill`"
        )
    else:
        why = (
            f"live, created {_at(created)} after the removal at {_at(removed_at)}, and not "
            "among R6's candidates (R6 off, or created while the worker was away): "
            "run `cleanup-worker backfill`"
        )
    return KeyFate(**base, status="live_orphaned", rule="none", why=why, alarm=alarm)


def _revoked_why(key: dict[str, Any], facts: dict[str, Any]) -> tuple[str, str]:
    ref, reason = key["revoked_by"] or "", key["revocation_reason"]
    created, revoked = _at(key["created_at"]), _at(key["revoked_at"])
    if ref.startswith("backfill:"):
        run = facts["runs"].get(ref)
        started = f", started {_at(run['started_at'])}" if run else ""
        return "R5", (
            f"revoked by R5 (backfill run {ref.removeprefix('backfill:')}{started}) at "
            f"{revoked}: its owner had no active membership covering its creation at {created}"
        )
    event = facts["revoking_events"].get(ref)
    if event is None:
        return "other", f"revoked at {revoked} by {ref or 'unknown'} ({reason}), not by a rule"
    removal = f"the removal at {_at(event['event_time'])} (event {event['source']}#"
    removal += f"{event['event_id']})"
    if reason == "orphaned":
        return "R6", (
            f"revoked by R6 at {revoked}: created {created}, after {removal}, while the member "
            "stayed removed"
        )
    if key["revoked_at"] == event["applied_at"]:
        return "R1", f"revoked by R1 at {revoked}: created {created}, at or before {removal}"
    return "R1 re-check", (
        f"revoked by the R1 re-check at {revoked}: created {created}, at or before {removal}, "
        f"but committed after that removal was applied at {_at(event['applied_at'])}"
    )
