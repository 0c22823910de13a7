"""The CloudEvents Kafka protocol binding for membership events ("Event contract", docs/design.md):
parsing as its own layer, and the JSON Schema producers read.

`parse_record` turns one record into a `MembershipEvent`, an `IgnoredEvent` (a valid event of
another type) or a `MalformedEvent` error, and nothing else for any input: whatever a producer
sends must end in the dead-letter topic, never in a crashed consumer. Error messages name what
is wrong but never quote the record, so they are safe to log and to put in DLQ headers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from cleanup_worker.adapters.kafka.clients import Header
from cleanup_worker.domain.events import EventTypes, IgnoredEvent, MembershipEvent, Origin
from cleanup_worker.domain.values import (
    ACCOUNT_ID_MAX,
    EVENT_ID_MAX,
    IAM_ID_MAX,
    RFC3339_PATTERN,
    SOURCE_MAX,
    has_forbidden_characters,
    parse_rfc3339,
)
from cleanup_worker.errors import MalformedEvent

__all__ = ["event_json_schema", "parse_record", "public_json_schema"]

_BAD_TIME = "not an RFC 3339 timestamp with offset"
_BAD_TEXT = "must not contain control characters or unpaired surrogates"


def _parse_time(value: object) -> datetime:
    # pydantic's datetime parsing is lax (numbers, dates, no offset): the string is gated first.
    if not isinstance(value, str):
        raise PydanticCustomError("rfc3339", _BAD_TIME)
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise PydanticCustomError("rfc3339", _BAD_TIME) from None


def _clean_text(value: str) -> str:
    if has_forbidden_characters(value):
        raise PydanticCustomError("text", _BAD_TEXT)
    return value


_Text = Annotated[str, AfterValidator(_clean_text)]


class _Envelope(BaseModel):
    """CloudEvents 1.0 context attributes; extension attributes are allowed and ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, title="CloudEvent")

    specversion: Literal["1.0"] = Field(description="CloudEvents version: always 1.0.")
    id: _Text = Field(min_length=1, max_length=EVENT_ID_MAX, description="Unique per source.")
    source: _Text = Field(min_length=1, max_length=SOURCE_MAX, description="A URI-reference.")
    type: _Text = Field(min_length=1, description="An added or a removed type (configurable).")
    time: Annotated[datetime, BeforeValidator(_parse_time)] = Field(
        description="When the membership changed: RFC 3339 with an explicit offset.",
        json_schema_extra={"pattern": RFC3339_PATTERN},
    )
    datacontenttype: str | None = Field(default=None, description="A JSON media type.")


class _MembershipData(BaseModel):
    """The member whose membership changed; other fields are allowed and ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, title="MembershipData")

    account_id: _Text = Field(min_length=1, max_length=ACCOUNT_ID_MAX, description="The account.")
    iam_id: _Text = Field(min_length=1, max_length=IAM_ID_MAX, description="The user.")


class _MembershipCloudEvent(_Envelope):
    """An account-membership CloudEvent in structured content mode: the whole Kafka value."""

    model_config = ConfigDict(title="MembershipCloudEvent")  # merged into the inherited one

    data: _MembershipData


_Model = TypeVar("_Model", bound=BaseModel)
_ATTRIBUTE_HEADERS = {
    f"ce_{name}": name for name in ("specversion", "id", "source", "type", "time")
}
_CONTENT_TYPE = "content-type"


class _JsonRejected(ValueError):
    """JSON that json.loads accepts but an event must not contain."""


def _reject_constant(_name: str) -> NoReturn:
    raise _JsonRejected("NaN and Infinity are not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins; an ambiguous event must not revoke anything.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _JsonRejected("duplicate key in an object")
    return result


# Built once: json.loads with hooks would build a decoder for every record.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def _load_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedEvent(f"{where}: not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:  # not its msg: the pure-Python scanner quotes input
        raise MalformedEvent(
            f"{where}: not valid JSON (line {exc.lineno} column {exc.colno})"
        ) from None
    except _JsonRejected as exc:
        raise MalformedEvent(f"{where}: not valid JSON ({exc})") from None
    except ValueError:  # int() refusing a number of thousands of digits
        raise MalformedEvent(f"{where}: not valid JSON (number too large)") from None
    except RecursionError:
        raise MalformedEvent(f"{where}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise MalformedEvent(f"{where}: not a JSON object")
    return value


def _validate(model: type[_Model], value: dict[str, Any], where: str) -> _Model:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        # loc holds our own field names and msg a fixed phrase: the input is never quoted.
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        problems = (f"{where.format('.'.join(map(str, e['loc'])))}: {e['msg']}" for e in errors)
        raise MalformedEvent("; ".join(problems)) from None


def _is_json(content_type: str | None) -> bool:
    media = "application/json" if content_type is None else _media_type(content_type)
    return media in ("application/json", "text/json") or media.endswith("+json")


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


class _Headers:
    """The headers parse_record reads; a duplicate of one of them makes the record ambiguous."""

    def __init__(self, headers: Sequence[Header]) -> None:
        self._values: dict[str, list[bytes | None]] = {}
        for name, value in headers:
            key = name.lower()
            if key == _CONTENT_TYPE or key in _ATTRIBUTE_HEADERS:
                self._values.setdefault(key, []).append(value)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def text(self, name: str) -> str | None:
        values = self._values.get(name, [None])
        if len(values) > 1:
            raise MalformedEvent(f"header '{name}': appears more than once")
        if values[0] is None:  # a null header value counts as absent
            return None
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedEvent(f"header '{name}': not valid UTF-8") from None


def _structured_event(
    value: bytes, content_type: str | None, found: _Headers
) -> dict[str, Any] | None:
    """The whole event when the record is in structured mode; None when it is binary."""
    if content_type is not None:
        media = _media_type(content_type)
        if media.startswith("application/cloudevents"):
            if media not in ("application/cloudevents", "application/cloudevents+json"):
                raise MalformedEvent(
                    "content-type: only single events in JSON format are supported"
                )
            return _load_object(value, "value")
    if "ce_specversion" in found:
        return None
    if content_type is None:
        return _load_object(value, "value")
    # The event contract (docs/design.md, docs/events.md): the CloudEvents Python SDK's legacy Kafka
    # binding writes structured events with the event's `datacontenttype` as content-type and no ce_
    # headers. Without ce_specversion a record cannot be binary, so a JSON object that names its
    # specversion is the event itself.
    try:
        event = _load_object(value, "value")
    except MalformedEvent:
        return None  # binary it is, and its missing ce_specversion is the error to report
    return event if "specversion" in event else None


def _binary_attributes(found: _Headers) -> dict[str, Any]:
    texts = {attribute: found.text(header) for header, attribute in _ATTRIBUTE_HEADERS.items()}
    return {attribute: text for attribute, text in texts.items() if text is not None}


def _binary_data(value: bytes, content_type: str | None) -> dict[str, Any]:
    if not _is_json(content_type):
        raise MalformedEvent("content-type: data must be JSON")
    return _load_object(value, "data")


def _structured_data(event: dict[str, Any], envelope: _Envelope) -> dict[str, Any]:
    if not _is_json(envelope.datacontenttype):
        raise MalformedEvent("attribute 'datacontenttype': data must be JSON")
    if "data" not in event:
        raise MalformedEvent("data: Field required")
    if not isinstance(data := event["data"], dict):
        raise MalformedEvent("data: not a JSON object")
    return data


def _parse(
    value: bytes | None,
    headers: Sequence[Header],
    types: EventTypes,
    max_bytes: int,
    origin: Origin | None,
) -> MembershipEvent | IgnoredEvent:
    if value is None:
        raise MalformedEvent("value: missing (a tombstone is not an event)")
    if len(value) > max_bytes:
        raise MalformedEvent(f"value: {len(value)} bytes, more than the maximum of {max_bytes}")
    found = _Headers(headers)
    content_type = found.text(_CONTENT_TYPE)
    structured = _structured_event(value, content_type, found)
    attributes = _binary_attributes(found) if structured is None else structured
    envelope = _validate(_Envelope, attributes, "attribute '{}'")
    change = types.change_of(envelope.type)
    if change is None:  # its data is none of our business, so it is not even decoded
        return IgnoredEvent(source=envelope.source, id=envelope.id, type=envelope.type)
    data = (
        _binary_data(value, content_type)
        if structured is None
        else _structured_data(structured, envelope)
    )
    member = _validate(_MembershipData, data, "data.{}")
    return MembershipEvent(
        source=envelope.source,
        id=envelope.id,
        type=envelope.type,
        change=change,
        time=envelope.time,
        account_id=member.account_id,
        iam_id=member.iam_id,
        origin=origin,
    )


def parse_record(
    value: bytes | None,
    headers: Sequence[Header],
    *,
    types: EventTypes,
    max_bytes: int,
    origin: Origin | None = None,
) -> MembershipEvent | IgnoredEvent:
    """One Kafka record as a membership event, in either CloudEvents content mode.

    Raises MalformedEvent (and nothing else, for any input) when the record is not a valid event.
    """
    try:
        return _parse(value, headers, types, max_bytes, origin)
    except MalformedEvent:
        raise
    except MemoryError:  # the worker's condition, not the record's: never dead-letter for it
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: any input ends as MalformedEvent
        # `from None`: a chained error's text may quote the payload into a logged traceback.
        raise MalformedEvent(f"record could not be parsed ({type(exc).__name__})") from None


class _PublicNames(GenerateJsonSchema):
    """Producers read the schema: they should not see our private class names."""

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(name).lstrip("_")


def public_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON Schema (2020-12) as producers and receivers read it."""
    schema = model.model_json_schema(schema_generator=_PublicNames)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a structured-mode membership event, from the models."""
    return public_json_schema(_MembershipCloudEvent)
