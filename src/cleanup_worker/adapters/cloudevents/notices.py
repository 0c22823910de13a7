"""The revocation notice ("Revocation notices", docs/design.md): a structured CloudEvent per revoked
key, its Kafka record, and its JSON Schema for receivers (docs/revocation-notice-schema.json).

Never the key hash: a notice names the key by its id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from cleanup_worker.adapters.cloudevents.binding import public_json_schema
from cleanup_worker.adapters.kafka.clients import Header
from cleanup_worker.adapters.postgres.outbox import PendingNotice

CONTENT_TYPE = "application/cloudevents+json"
HEADERS: list[Header] = [("content-type", CONTENT_TYPE.encode())]


class RevocationData(BaseModel):
    """The revoked key and why."""

    model_config = ConfigDict(frozen=True, title="RevocationData")

    key_id: str = Field(
        description="The revoked key's id, as text: a UUID for our own api_keys; for a mapped "
        "key table, its id column's value as PostgreSQL prints it (an integer id is '12345')."
    )
    account_id: str = Field(description="The account the key belongs to.")
    iam_id: str = Field(description="The user who created the key.")
    reason: str = Field(description="'member_removed' (R1) or 'orphaned' (R5, R6).")
    revoked_at: datetime = Field(
        description="When it was revoked (the revoking transaction's time)."
    )
    revoked_by: str = Field(description="'event:<source>#<id>' or 'backfill:<run id>'.")


class RevocationNotice(BaseModel):
    """`api_key.revoked`: one API key stopped working. Deduplicate by `id`: a key is revoked
    once (R4), so its notice id never changes, however often it is delivered."""

    model_config = ConfigDict(frozen=True, title="RevocationNotice")

    specversion: str = Field(default="1.0", description="CloudEvents version: always 1.0.")
    id: str = Field(description="'revoked:<key id>': the same for every delivery of a key.")
    source: str = Field(description="CLEANUP_REVOCATION_EVENT_SOURCE (default /cleanup-worker).")
    type: str = Field(description="CLEANUP_REVOCATION_EVENT_TYPE (default api_key.revoked).")
    time: datetime = Field(description="When the key was revoked (RFC 3339).")
    subject: str = Field(description="The key id.")
    datacontenttype: str = Field(default="application/json")
    data: RevocationData


def notice(pending: PendingNotice, *, event_type: str, source: str) -> RevocationNotice:
    """The notice announcing one revocation the outbox holds."""
    return RevocationNotice(
        id=f"revoked:{pending.key_id}",
        source=source,
        type=event_type,
        time=pending.revoked_at,
        subject=pending.key_id,
        data=RevocationData(
            key_id=pending.key_id,
            account_id=pending.account_id,
            iam_id=pending.iam_id,
            reason=pending.reason,
            revoked_at=pending.revoked_at,
            revoked_by=pending.revoked_by,
        ),
    )


def value(pending: PendingNotice, *, event_type: str, source: str) -> bytes:
    """The JSON of `notice(pending)`, serialized from a plain dict by pydantic's own serializer
    (UUIDs and times written alike): the relay writes five per removal, and validating the
    two models first cost more than twice as much (the unit tests hold the two equal)."""
    return to_json(
        {
            "specversion": "1.0",
            "id": f"revoked:{pending.key_id}",
            "source": source,
            "type": event_type,
            "time": pending.revoked_at,
            "subject": pending.key_id,
            "datacontenttype": "application/json",
            "data": {
                "key_id": pending.key_id,
                "account_id": pending.account_id,
                "iam_id": pending.iam_id,
                "reason": pending.reason,
                "revoked_at": pending.revoked_at,
                "revoked_by": pending.revoked_by,
            },
        }
    )


def key(pending: PendingNotice) -> bytes:
    """The Kafka key of a notice: `<account_id>/<iam_id>`."""
    return f"{pending.account_id}/{pending.iam_id}".encode()


def record(
    pending: PendingNotice, *, event_type: str, source: str
) -> tuple[bytes, bytes, list[Header]]:
    """Kafka key (`<account_id>/<iam_id>`), value and headers of a notice."""
    return key(pending), value(pending, event_type=event_type, source=source), HEADERS


def notice_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a notice, from the model."""
    return public_json_schema(RevocationNotice)
