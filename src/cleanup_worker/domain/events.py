"""Membership events as the rules see them ("Rules", docs/design.md): what changed, for whom, and
when.

How they arrive (CloudEvents over Kafka) is an adapter's business:
`adapters/cloudevents/binding.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

__all__ = ["Change", "EventTypes", "IgnoredEvent", "Member", "MembershipEvent", "Origin"]

Member = tuple[str, str]  # (account_id, iam_id): whose membership, the unit of every rule


class Change(StrEnum):
    """What a membership event says happened."""

    ADDED = "added"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class EventTypes:
    """Which CloudEvent `type` values mean added / removed (configurable)."""

    added: frozenset[str] = frozenset({"account.member.added"})
    removed: frozenset[str] = frozenset({"account.member.removed"})

    def change_of(self, event_type: str) -> Change | None:
        """The change a type means, or None for a type that is none of ours.

        Removed first: if settings ever let a type into both lists, revoking is the safe side.
        """
        if event_type in self.removed:
            return Change.REMOVED
        if event_type in self.added:
            return Change.ADDED
        return None


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event was read (topic, partition, offset) and the record's Kafka timestamp:
    kept in the ledger for operators (`explain`, `report`)."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class MembershipEvent:
    """A valid `added` or `removed` event; identity for deduplication is (source, id)."""

    source: str
    id: str
    type: str
    change: Change
    time: datetime
    account_id: str
    iam_id: str
    # Not part of the event: the same event read at two places is still the same event.
    origin: Origin | None = field(default=None, compare=False)

    @property
    def identity(self) -> tuple[str, str]:
        """(source, id): what makes two records the same event."""
        return (self.source, self.id)

    @property
    def member(self) -> Member:
        """(account_id, iam_id): whose membership changed."""
        return (self.account_id, self.iam_id)

    @property
    def ref(self) -> str:
        """The `revoked_by` value of the keys this event revokes."""
        return f"event:{self.source}#{self.id}"

    @property
    def order_key(self) -> tuple[datetime, str, str]:
        """R3 order: latest by time, then event id (source only makes the order total)."""
        return (self.time, self.id, self.source)


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    """A valid CloudEvent whose type is neither added nor removed: skipped and counted."""

    source: str
    id: str
    type: str
