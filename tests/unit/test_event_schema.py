"""The checked-in JSON Schema of the event (docs/event-schema.json) matches the models."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cleanup_worker.adapters.cloudevents import schema
from cleanup_worker.adapters.cloudevents.binding import event_json_schema, parse_record
from cleanup_worker.domain.events import EventTypes, MembershipEvent

SCHEMA_FILE = Path(__file__).parents[2] / "docs" / "event-schema.json"
REGENERATE = (
    "docs/event-schema.json is stale; regenerate it with "
    "`.venv/bin/python -m cleanup_worker.adapters.cloudevents.schema > docs/event-schema.json`"
)
# The event contract's example (docs/events.md), verbatim.
CONTRACT_EXAMPLE = """
{"specversion": "1.0", "id": "6f1c0c9e-5d2e-4a3b-9a61-0d5f1f3b2a10",
 "source": "/accounts", "type": "account.member.removed",
 "time": "2026-11-26T14:03:07.512Z", "datacontenttype": "application/json",
 "data": {"account_id": "a-4f2e91", "iam_id": "IBMid-550001", "actor": "IBMid-100200"}}
"""


def checked_in() -> dict[str, Any]:
    """The schema as checked in."""
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def conforms(value: Any, node: dict[str, Any], root: dict[str, Any]) -> bool:
    """Whether `value` satisfies the few keywords the event schema uses (no jsonschema here)."""
    if "$ref" in node:
        return conforms(value, root["$defs"][node["$ref"].rpartition("/")[2]], root)
    if "anyOf" in node:
        return any(conforms(value, option, root) for option in node["anyOf"])
    kinds: dict[str, type] = {"object": dict, "string": str, "null": type(None)}
    if "type" in node and not isinstance(value, kinds[node["type"]]):
        return False
    if isinstance(value, str):
        return (
            len(value) >= node.get("minLength", 0)
            and len(value) <= node.get("maxLength", len(value))
            and value == node.get("const", value)
            and re.search(node.get("pattern", ""), value) is not None
        )
    if isinstance(value, dict):
        return set(node.get("required", [])) <= value.keys() and all(
            conforms(value[key], sub, root)
            for key, sub in node.get("properties", {}).items()
            if key in value
        )
    return True


def test_checked_in_schema_is_current() -> None:
    """docs/event-schema.json is what the models generate today."""
    assert checked_in() == event_json_schema(), REGENERATE


def test_checked_in_schema_is_the_command_output(capsys: pytest.CaptureFixture[str]) -> None:
    """The file is byte for byte what `python -m cleanup_worker.adapters.cloudevents.schema`
    prints."""
    schema.main([])
    assert capsys.readouterr().out == SCHEMA_FILE.read_text(encoding="utf-8"), REGENERATE


def test_schema_requires_the_contract_attributes() -> None:
    """The schema lists every required attribute and data field of the event contract."""
    generated = event_json_schema()
    data = generated["$defs"]["MembershipData"]
    assert set(generated["required"]) == {"specversion", "id", "source", "type", "time", "data"}
    assert set(data["required"]) == {"account_id", "iam_id"}


def test_schema_states_the_limits() -> None:
    """Lengths, the spec version and the time format are part of the schema."""
    properties = event_json_schema()["properties"]
    data = event_json_schema()["$defs"]["MembershipData"]["properties"]
    assert (properties["id"]["minLength"], properties["id"]["maxLength"]) == (1, 256)
    assert (properties["source"]["minLength"], properties["source"]["maxLength"]) == (1, 1024)
    assert (data["account_id"]["minLength"], data["account_id"]["maxLength"]) == (1, 128)
    assert (data["iam_id"]["minLength"], data["iam_id"]["maxLength"]) == (1, 256)
    assert properties["specversion"]["const"] == "1.0"
    assert properties["time"]["format"] == "date-time"


def test_design_example_fits_the_schema() -> None:
    """The event contract's example satisfies the schema."""
    assert conforms(json.loads(CONTRACT_EXAMPLE), checked_in(), checked_in())


def test_schema_rejects_a_time_without_offset() -> None:
    """The schema's time pattern, like the parser, wants an explicit offset."""
    event = json.loads(CONTRACT_EXAMPLE) | {"time": "2026-11-26T14:03:07.512"}
    assert not conforms(event, checked_in(), checked_in())


def test_design_example_parses() -> None:
    """The event contract's example is a valid removal in structured mode."""
    event = parse_record(CONTRACT_EXAMPLE.encode(), [], types=EventTypes(), max_bytes=65536)
    assert isinstance(event, MembershipEvent)
    assert (event.account_id, event.iam_id) == ("a-4f2e91", "IBMid-550001")
