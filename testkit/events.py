"""Membership events for tests: made here, encoded in both CloudEvents content modes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from cleanup_worker.domain.events import Change, MembershipEvent

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def event(
    change: Change | str,
    account_id: str,
    iam_id: str,
    time: datetime,
    *,
    event_id: str | None = None,
    source: str = "/accounts",
) -> MembershipEvent:
    change = Change(change)
    return MembershipEvent(
        source=source,
        id=event_id or uuid.uuid4().hex,
        type=f"account.member.{change.value}",
        change=change,
        time=time,
        account_id=account_id,
        iam_id=iam_id,
    )


def removals(
    count: int, *, account_id: str = "acct", prefix: str = "user-"
) -> list[MembershipEvent]:
    """A stream of removals, one member each: `prefix`0, `prefix`1, ... (every record a
    distinct event, so the ledger counts records)."""
    return [event("removed", account_id, f"{prefix}{i}", at(10)) for i in range(count)]


def structured(e: MembershipEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    body = {
        "specversion": "1.0",
        "id": e.id,
        "source": e.source,
        "type": e.type,
        "time": e.time.isoformat(),
        "datacontenttype": "application/json",
        "data": {"account_id": e.account_id, "iam_id": e.iam_id},
    }
    return json.dumps(body).encode(), [("content-type", b"application/cloudevents+json")]


def binary(e: MembershipEvent) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", e.id.encode()),
        ("ce_source", e.source.encode()),
        ("ce_type", e.type.encode()),
        ("ce_time", e.time.isoformat().encode()),
        ("content-type", b"application/json"),
    ]
    return json.dumps({"account_id": e.account_id, "iam_id": e.iam_id}).encode(), headers
