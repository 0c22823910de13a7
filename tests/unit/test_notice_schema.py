"""The checked-in JSON Schema of the revocation notice matches the model, and a notice built
from an outbox row has the shape of docs/revocations.md's example (and never carries a key
hash)."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest

from cleanup_worker.adapters.cloudevents import notices
from cleanup_worker.adapters.cloudevents import schema as event_schema
from cleanup_worker.adapters.postgres.outbox import OutboxRow

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "revocation-notice-schema.json"
REGENERATE = "docs/revocation-notice-schema.json is stale; regenerate it with `make schema`"
KEY = UUID("7d0c5f3e-3a0b-4c3e-9f4e-2b1d8f6a9c10")
REVOKED = datetime(2026, 11, 26, 14, 3, 7, 530000, tzinfo=UTC)
ROW = OutboxRow(
    id=1,
    key_id=str(KEY),
    account_id="a-4f2e91",
    iam_id="IBMid-550001",
    reason="member_removed",
    revoked_at=REVOKED,
    revoked_by="event:/accounts#6f1c0c9e",
    event_time=REVOKED,
)


def test_checked_in_schema_is_the_command_output(capsys: pytest.CaptureFixture[str]) -> None:
    """The file is byte for byte what `python -m ...event_schema notice` prints."""
    event_schema.main(["notice"])
    assert capsys.readouterr().out == SCHEMA_FILE.read_text(encoding="utf-8"), REGENERATE


def test_record_is_the_design_notice() -> None:
    """Key `<account>/<user>`, structured content-type, id `revoked:<key id>`, data as §4b."""
    key, value, headers = notices.record(ROW, event_type="api_key.revoked", source="/cw")
    assert key == b"a-4f2e91/IBMid-550001"
    assert headers == [("content-type", b"application/cloudevents+json")]
    body = json.loads(value)
    assert body == {
        "specversion": "1.0",
        "id": f"revoked:{KEY}",
        "source": "/cw",
        "type": "api_key.revoked",
        "time": "2026-11-26T14:03:07.530000Z",
        "subject": str(KEY),
        "datacontenttype": "application/json",
        "data": {
            "key_id": str(KEY),
            "account_id": "a-4f2e91",
            "iam_id": "IBMid-550001",
            "reason": "member_removed",
            "revoked_at": "2026-11-26T14:03:07.530000Z",
            "revoked_by": "event:/accounts#6f1c0c9e",
        },
    }


def test_schema_names_every_field_and_no_hash() -> None:
    """Receivers see every field documented; nothing named like a hash or a secret exists."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    text = json.dumps(schema).lower()
    assert "hash" not in text
    data = schema["$defs"]["RevocationData"]["properties"]
    assert set(data) == {"key_id", "account_id", "iam_id", "reason", "revoked_at", "revoked_by"}


def test_an_integer_key_id_is_announced_as_its_text() -> None:
    """A mapped table's bigint id 12345 is the notice's key_id "12345", subject and id too."""
    row = dataclasses.replace(ROW, key_id="12345")
    body = json.loads(notices.record(row, event_type="api_key.revoked", source="/cw")[1])
    assert (body["id"], body["subject"], body["data"]["key_id"]) == (
        "revoked:12345",
        "12345",
        "12345",
    )
