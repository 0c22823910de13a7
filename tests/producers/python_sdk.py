"""A producing team's code, as the CloudEvents Python SDK documents it: event in, Kafka message out.

Run by tests/integration/test_producers.py as a subprocess, with PYTHONPATH pointing at one
SDK release installed by `make producers` (1.x and 2.x are the same distribution, so they
cannot share the test's environment):

    PYTHONPATH=.dev/producers/python-sdk1 python tests/producers/python_sdk.py < events

stdin: one JSON object per line, {"binding": "legacy" | "core", "mode": "binary" | "structured",
"key", "id", "source", "type", "time", "datacontenttype" (optional), "data"}. "legacy" is the
`cloudevents.kafka` binding of 1.x (`cloudevents.v1.kafka` in 2.x), "core" the
`cloudevents.core.bindings.kafka` of 2.x. stdout: per line, the message the SDK made, as
{"key", "headers": [[name, base64]], "value": base64}. The SDK has no Kafka client of its own:
the test sends these messages with aiokafka, exactly as made.
"""

from __future__ import annotations

import base64
import importlib
import json
import sys
from datetime import datetime
from typing import Any


def _legacy(spec: dict[str, Any]) -> Any:
    # 2.x keeps the 1.x binding under cloudevents.v1; a team that upgraded imports it there.
    prefix = "cloudevents.v1" if _has("cloudevents.core") else "cloudevents"
    event_class = importlib.import_module(f"{prefix}.http").CloudEvent
    kafka = importlib.import_module(f"{prefix}.kafka")
    attributes = _attributes(spec)
    attributes["time"] = spec["time"]  # 1.x takes the RFC 3339 text as it is
    event = event_class(attributes, spec["data"])
    return kafka.to_binary(event) if spec["mode"] == "binary" else kafka.to_structured(event)


def _core(spec: dict[str, Any]) -> Any:
    # importlib: the test's own environment has no SDK for mypy to read.
    kafka = importlib.import_module("cloudevents.core.bindings.kafka")
    json_format = importlib.import_module("cloudevents.core.formats.json").JSONFormat
    event_class = importlib.import_module("cloudevents.core.v1.event").CloudEvent
    attributes = _attributes(spec)
    attributes["time"] = datetime.fromisoformat(spec["time"])  # 2.x wants a datetime
    event = event_class(attributes, spec["data"])
    convert = kafka.to_binary if spec["mode"] == "binary" else kafka.to_structured
    return convert(event, json_format())


def _attributes(spec: dict[str, Any]) -> dict[str, Any]:
    attributes = {
        "specversion": "1.0",
        "id": spec["id"],
        "source": spec["source"],
        "type": spec["type"],
        # The SDKs' documented way to set the Kafka key (their default key mapper).
        "partitionkey": spec["key"],
    }
    if spec.get("datacontenttype") is not None:
        attributes["datacontenttype"] = spec["datacontenttype"]
    return attributes


def _has(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        message = _core(spec) if spec["binding"] == "core" else _legacy(spec)
        key = message.key.decode() if isinstance(message.key, bytes) else message.key
        headers = [
            [name, base64.b64encode(_as_bytes(value)).decode()]
            for name, value in message.headers.items()
        ]
        value = base64.b64encode(_as_bytes(message.value)).decode()
        print(json.dumps({"key": key, "headers": headers, "value": value}), flush=True)


if __name__ == "__main__":
    main()
