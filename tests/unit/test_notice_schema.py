"""The checked-in JSON Schema of the revocation notice matches the model, and a notice built
from the outbox has the shape of docs/revocations.md's example (and never carries a key
hash)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from cleanup_worker.adapters.cloudevents import notices
from cleanup_worker.adapters.cloudevents import schema as event_schema
from cleanup_worker.adapters.postgres.outbox import PendingNotice

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "revocation-notice-schema.json"
REGENERATE = "docs/revocation-notice-schema.json is stale; regenerate it with `make schema`"
KEY = UUID("7d0c5f3e-3a0b-4c3e-9f4e-2b1d8f6a9c10")
REVOKED = datetime(2026, 11, 26, 14, 3, 7, 530000, tzinfo=UTC)
ROW = PendingNotice(
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


def test_written_json_is_the_model_s_notice() -> None:
    """The relay's directly written JSON is the model's notice, field for field, for any row."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    texts = ["a-4f2e91", 'quote" back\\slash', "tab\tnew\nline\u0001", "ümlaut/日本", "\u2028"]
    for _ in range(200):
        row = PendingNotice(
            key_id=rng.choice([str(uuid4()), str(rng.randrange(1, 2**62)), "ApiKey-7"]),
            account_id=rng.choice(texts),
            iam_id=rng.choice(texts) + str(rng.randrange(10**6)),
            reason=rng.choice(["member_removed", "orphaned"]),
            # Whole seconds too: both then write no fraction.
            revoked_at=REVOKED
            + timedelta(
                seconds=rng.randrange(10**6), microseconds=rng.choice([0, rng.randrange(10**6)])
            ),
            revoked_by=rng.choice(texts),
            event_time=REVOKED,
        )
        written = notices.value(row, event_type="api_key.revoked", source=rng.choice(texts))
        model = notices.notice(
            row, event_type="api_key.revoked", source=json.loads(written)["source"]
        )
        assert json.loads(written) == json.loads(model.model_dump_json()), seed
        assert notices.RevocationNotice.model_validate_json(written) == model, seed


def test_schema_names_every_field_and_no_hash() -> None:
    """Receivers see every field documented; nothing named like a hash or a secret exists."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    text = json.dumps(schema).lower()
    assert "hash" not in text
    data = schema["$defs"]["RevocationData"]["properties"]
    assert set(data) == {"key_id", "account_id", "iam_id", "reason", "revoked_at", "revoked_by"}


def test_an_integer_key_id_is_announced_as_its_text() -> None:
    """A mapped table's bigint id 12345 is the notice's key_id "12345", subject and id too."""
    row = ROW._replace(key_id="12345")
    body = json.loads(notices.record(row, event_type="api_key.revoked", source="/cw")[1])
    assert (body["id"], body["subject"], body["data"]["key_id"]) == (
        "revoked:12345",
        "12345",
        "12345",
    )
