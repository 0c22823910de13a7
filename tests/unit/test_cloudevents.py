"""The event contract ("Event contract", docs/design.md): CloudEvents in both content modes, and
what is malformed."""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cleanup_worker.adapters.cloudevents.binding import parse_record
from cleanup_worker.adapters.kafka.clients import Header
from cleanup_worker.domain.events import Change, EventTypes, IgnoredEvent, MembershipEvent
from cleanup_worker.errors import MalformedEvent

TYPES = EventTypes()
MAX_BYTES = 65536
SECRET = "tok-7Q9zSECRETmarker"
STRUCTURED: list[Header] = [("content-type", b"application/cloudevents+json; charset=utf-8")]
Event = dict[str, Any]


def example(**attributes: Any) -> Event:
    """The event contract's example event (docs/events.md), with `attributes` replaced."""
    event: Event = {
        "specversion": "1.0",
        "id": "6f1c0c9e-5d2e-4a3b-9a61-0d5f1f3b2a10",
        "source": "/accounts",
        "type": "account.member.removed",
        "time": "2026-11-26T14:03:07.512Z",
        "datacontenttype": "application/json",
        "data": {"account_id": "a-4f2e91", "iam_id": "IBMid-550001", "actor": "IBMid-100200"},
    }
    return event | attributes


def without(key: str) -> Event:
    """The example event without the attribute `key`."""
    event = example()
    del event[key]
    return event


def with_data(**fields: Any) -> Event:
    """The example event with data fields replaced (None removes one)."""
    data = {k: v for k, v in (example()["data"] | fields).items() if v is not None}
    return example(data=data)


def encode(event: Event) -> bytes:
    """A structured-mode value."""
    return json.dumps(event).encode()


def binary(event: Event, content_type: bytes | None = b"application/json") -> list[Header]:
    """The binary-mode headers of `event` (its data is the value)."""
    headers: list[Header] = [
        (f"ce_{k}", str(v).encode())
        for k, v in event.items()
        if k not in ("data", "datacontenttype")
    ]
    return headers if content_type is None else [*headers, ("content-type", content_type)]


def parse(value: bytes | None, headers: Sequence[Header] = STRUCTURED) -> object:
    """parse_record with the default types and size limit."""
    return parse_record(value, headers, types=TYPES, max_bytes=MAX_BYTES)


def malformed(value: bytes | None, headers: Sequence[Header] = STRUCTURED) -> MalformedEvent:
    """The MalformedEvent that parsing raises."""
    with pytest.raises(MalformedEvent) as caught:
        parse(value, headers)
    return caught.value


EXPECTED = MembershipEvent(
    source="/accounts",
    id="6f1c0c9e-5d2e-4a3b-9a61-0d5f1f3b2a10",
    type="account.member.removed",
    change=Change.REMOVED,
    time=datetime(2026, 11, 26, 14, 3, 7, 512000, tzinfo=UTC),
    account_id="a-4f2e91",
    iam_id="IBMid-550001",
)


# --- valid events ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        b"application/cloudevents+json",
        b"application/cloudevents+json; charset=utf-8",
        b"Application/CloudEvents+JSON ; charset=UTF-8",
        b"application/cloudevents",
    ],
)
def test_structured_with_content_type(content_type: bytes) -> None:
    """A structured event is recognised by its content-type, parameters and case aside."""
    assert parse(encode(example()), [("Content-Type", content_type)]) == EXPECTED


def test_structured_without_content_type() -> None:
    """With no content-type header, a JSON object with specversion is a structured event."""
    assert parse(encode(example()), []) == EXPECTED


@pytest.mark.parametrize(
    "content_type", [b"application/json", b"application/json; charset=utf-8", b"text/plain"]
)
@pytest.mark.parametrize("datacontenttype", [True, False], ids=["datacontenttype", "none"])
def test_structured_without_ce_headers_whatever_the_content_type(
    content_type: bytes, datacontenttype: bool
) -> None:
    """No ce_specversion and a JSON object with specversion: structured (the Python SDK 1.x
    legacy binding writes its `datacontenttype` as content-type)."""
    event = example() if datacontenttype else without("datacontenttype")
    assert parse(encode(event), [("content-type", content_type)]) == EXPECTED


def test_ce_specversion_header_keeps_binary_mode() -> None:
    """With ce_specversion the record is binary even if its value looks like a whole event:
    the value is then the data, which lacks the member."""
    message = str(malformed(encode(example()), binary(example())))
    assert message.startswith("data.account_id: Field required")


@pytest.mark.parametrize(
    "value",
    [encode(without("specversion")), b"{not json", b"[1]", b'{"account_id": "a", "iam_id": "u"}'],
)
def test_json_content_type_without_specversion_is_binary(value: bytes) -> None:
    """Without ce_specversion and without a specversion in the value it stays binary, and
    its missing ce_specversion is what is reported, as before."""
    message = str(malformed(value, [("content-type", b"application/json")]))
    assert message.startswith("attribute 'specversion': Field required")


def test_binary() -> None:
    """A binary event takes its attributes from ce_ headers and its data from the value."""
    event = example()
    assert parse(json.dumps(event["data"]).encode(), binary(event)) == EXPECTED


@pytest.mark.parametrize("content_type", [None, b"application/json; charset=utf-8", b"x/y+json"])
def test_binary_json_content_types(content_type: bytes | None) -> None:
    """Binary data may be any JSON media type, or have none (ce_specversion marks the mode)."""
    event = example()
    assert parse(json.dumps(event["data"]).encode(), binary(event, content_type)) == EXPECTED


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2026-11-26T14:03:07Z", datetime(2026, 11, 26, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-26t14:03:07z", datetime(2026, 11, 26, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-26T14:03:07+00:00", datetime(2026, 11, 26, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-26T14:03:07-00:00", datetime(2026, 11, 26, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-26T15:33:07.25+01:30", datetime(2026, 11, 26, 14, 3, 7, 250000, tzinfo=UTC)),
        ("2026-11-26T09:03:07.000001-05:00", datetime(2026, 11, 26, 14, 3, 7, 1, tzinfo=UTC)),
        ("2026-11-27T00:03:07+10:00", datetime(2026, 11, 26, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-26T14:03:07.123456789Z", datetime(2026, 11, 26, 14, 3, 7, 123456, tzinfo=UTC)),
    ],
)
def test_time_normalised_to_utc(time: str, expected: datetime) -> None:
    """Time is parsed with its offset and held in UTC; digits beyond microseconds are dropped."""
    event = parse(encode(example(time=time)))
    assert isinstance(event, MembershipEvent)
    assert event.time == expected
    assert event.time.tzinfo is UTC


def test_extra_data_fields_and_extensions_ignored() -> None:
    """Extension attributes and extra data fields do not change the event."""
    event = example(traceparent="00-abc-01", partitionkey=7, subject={"nested": [1]})
    event["data"] |= {"actor": {"any": "thing"}, "reason": None}
    assert parse(encode(event)) == EXPECTED


@pytest.mark.parametrize(("type_", "change"), [("Joined", Change.ADDED), ("Left", Change.REMOVED)])
def test_configurable_type_names(type_: str, change: Change) -> None:
    """Types are read from the configured lists, so a producer's own names can be used."""
    types = EventTypes(added=frozenset({"Joined", "Hired"}), removed=frozenset({"Left"}))
    event = parse_record(encode(example(type=type_)), [], types=types, max_bytes=MAX_BYTES)
    assert isinstance(event, MembershipEvent)
    assert event.change is change


def test_default_names_ignored_when_reconfigured() -> None:
    """Once the lists are configured, the default type names are no longer membership events."""
    types = EventTypes(added=frozenset({"Joined"}), removed=frozenset({"Left"}))
    event = parse_record(encode(example()), [], types=types, max_bytes=MAX_BYTES)
    assert isinstance(event, IgnoredEvent)


def test_type_in_both_lists_is_a_removal() -> None:
    """A type listed as both added and removed counts as removed, the safe side."""
    types = EventTypes(added=frozenset({"x"}), removed=frozenset({"x"}))
    event = parse_record(encode(example(type="x")), [], types=types, max_bytes=MAX_BYTES)
    assert isinstance(event, MembershipEvent)
    assert event.change is Change.REMOVED


def test_other_type_is_ignored() -> None:
    """A valid event of another type is returned as IgnoredEvent with its identity."""
    event = parse(encode(example(type="account.renamed")))
    assert event == IgnoredEvent(source="/accounts", id=EXPECTED.id, type="account.renamed")


def test_ignored_event_data_not_validated() -> None:
    """An ignored event's data is not looked at, whatever it is."""
    event = without("data") | {"type": "account.renamed", "datacontenttype": "text/plain"}
    assert isinstance(parse(encode(event)), IgnoredEvent)


def test_ignored_binary_event_value_not_decoded() -> None:
    """A binary event of another type may carry any value."""
    headers = binary(example(type="account.renamed"), b"application/octet-stream")
    assert isinstance(parse(b"\xff\x00 not json", headers), IgnoredEvent)


def test_ignored_event_envelope_validated() -> None:
    """An event of another type with a bad attribute is still malformed."""
    err = malformed(encode(example(type="account.renamed", time="yesterday")))
    assert str(err) == "attribute 'time': not an RFC 3339 timestamp with offset"


def test_ref_names_the_event() -> None:
    """`ref`, the revoked_by value, is event:<source>#<id>."""
    assert EXPECTED.ref == "event:/accounts#6f1c0c9e-5d2e-4a3b-9a61-0d5f1f3b2a10"


def test_order_key_is_time_then_id_then_source() -> None:
    """Events order by time, then event id, then source."""
    assert EXPECTED.order_key == (EXPECTED.time, EXPECTED.id, EXPECTED.source)


def test_null_header_value_counts_as_absent() -> None:
    """A content-type header without a value is treated as no content-type header."""
    assert parse(encode(example()), [("content-type", None)]) == EXPECTED


def test_value_of_exactly_max_bytes_accepted() -> None:
    """The size limit is inclusive."""
    value = encode(example())
    assert parse_record(value, STRUCTURED, types=TYPES, max_bytes=len(value)) == EXPECTED


# --- malformed records ----------------------------------------------------------------------

TIME_ERROR = "attribute 'time': not an RFC 3339 timestamp with offset"
MALFORMED_STRUCTURED: list[tuple[str, bytes, str]] = [
    ("not-json", b"{not json", "value: not valid JSON (line 1 column 2)"),
    ("not-utf8", b'{"id": "\xff"}', "value: not valid UTF-8"),
    ("array", b"[1, 2]", "value: not a JSON object"),
    ("string", b'"event"', "value: not a JSON object"),
    ("null", b"null", "value: not a JSON object"),
    ("empty", b"", "value: not valid JSON (line 1 column 1)"),
    ("nan", b'{"id": NaN}', "value: not valid JSON (NaN and Infinity are not JSON)"),
    ("duplicate-key", b'{"id": "a", "id": "b"}', "value: not valid JSON (duplicate key"),
    ("deep", b"[" * 50_000, "value: JSON nested too deeply"),
    ("huge-int", b'{"id": ' + b"9" * 50_000 + b"}", "value: not valid JSON (number too large)"),
    *(
        (f"no-{key}", encode(without(key)), f"attribute '{key}': Field required")
        for key in ("specversion", "id", "source", "type", "time")
    ),
    ("no-data", encode(without("data")), "data: Field required"),
    ("data-not-object", encode(example(data=["a", "u"])), "data: not a JSON object"),
    ("specversion-0.3", encode(example(specversion="0.3")), "attribute 'specversion': Input"),
    ("specversion-number", encode(example(specversion=1.0)), "attribute 'specversion': Input"),
    ("id-257", encode(example(id="i" * 257)), "attribute 'id': String should have at most 256"),
    ("id-empty", encode(example(id="")), "attribute 'id': String should have at least 1"),
    ("id-number", encode(example(id=42)), "attribute 'id': Input should be a valid string"),
    ("id-nul", encode(example(id="a\x00b")), "attribute 'id': must not contain control"),
    (
        "id-surrogate",
        encode(example(id="\ud800")),
        "attribute 'id': Input should be a valid string",
    ),
    ("source-1025", encode(example(source="s" * 1025)), "attribute 'source': String should"),
    ("source-empty", encode(example(source="")), "attribute 'source': String should"),
    ("type-empty", encode(example(type="")), "attribute 'type': String should"),
    ("time-no-offset", encode(example(time="2026-11-26T14:03:07")), TIME_ERROR),
    ("time-date-only", encode(example(time="2026-11-26")), TIME_ERROR),
    ("time-integer", encode(example(time=1795701787)), TIME_ERROR),
    ("time-float", encode(example(time=1795701787.5)), TIME_ERROR),
    ("time-null", encode(example(time=None)), TIME_ERROR),
    ("time-garbage", encode(example(time="next tuesday")), TIME_ERROR),
    ("time-space", encode(example(time="2026-11-26 14:03:07Z")), TIME_ERROR),
    ("time-month-13", encode(example(time="2026-13-26T14:03:07Z")), TIME_ERROR),
    ("time-leap-second", encode(example(time="2026-12-31T23:59:60Z")), TIME_ERROR),
    ("time-offset-24h", encode(example(time="2026-11-26T14:03:07+24:00")), TIME_ERROR),
    ("time-offset-minute-60", encode(example(time="2026-11-26T14:03:07+01:60")), TIME_ERROR),
    ("time-offset-short", encode(example(time="2026-11-26T14:03:07+01")), TIME_ERROR),
    ("time-newline", encode(example(time="2026-11-26T14:03:07Z\n")), TIME_ERROR),
    ("time-non-ascii-digits", encode(example(time="٢٠٢٦-11-26T14:03:07Z")), TIME_ERROR),
    ("time-overflow", encode(example(time="0001-01-01T00:00:00+01:00")), TIME_ERROR),
    (
        "datacontenttype",
        encode(example(datacontenttype="text/plain")),
        "attribute 'datacontenttype': data must",
    ),
    (
        "account-129",
        encode(with_data(account_id="a" * 129)),
        "data.account_id: String should have at most 128 characters",
    ),
    ("account-empty", encode(with_data(account_id="")), "data.account_id: String should"),
    ("account-number", encode(with_data(account_id=7)), "data.account_id: Input should be"),
    ("account-missing", encode(with_data(account_id=None)), "data.account_id: Field required"),
    ("iam-missing", encode(with_data(iam_id=None)), "data.iam_id: Field required"),
    ("iam-257", encode(with_data(iam_id="u" * 257)), "data.iam_id: String should have at most"),
    ("iam-tab", encode(with_data(iam_id="u\tv")), "data.iam_id: must not contain control"),
]


@pytest.mark.parametrize(
    ("value", "message"),
    [pytest.param(value, message, id=name) for name, value, message in MALFORMED_STRUCTURED],
)
@pytest.mark.parametrize("headers", [STRUCTURED, []], ids=["content-type", "no-content-type"])
def test_malformed_structured(value: bytes, message: str, headers: list[Header]) -> None:
    """Each way a structured event can be wrong is malformed, and the message says which."""
    assert str(malformed(value, headers)).startswith(message)


ONLY = "content-type: only single events in JSON format are supported"
DATA = json.dumps(example()["data"]).encode()
MALFORMED_BINARY: list[tuple[str, bytes, list[Header], str]] = [
    ("header-not-utf8", DATA, [*binary(without("id")), ("ce_id", b"\xffid")], "header 'ce_id'"),
    ("no-ce_id", DATA, binary(without("id")), "attribute 'id': Field required"),
    ("no-ce_specversion", DATA, binary(without("specversion")), "attribute 'specversion': Field"),
    ("duplicate-ce_id", DATA, [*binary(example()), ("CE_ID", b"x")], "header 'ce_id': appears"),
    ("bad-ce_time", DATA, binary(example(time="2026-11-26")), TIME_ERROR),
    ("text-data", DATA, binary(example(), b"text/plain"), "content-type: data must be JSON"),
    ("data-not-json", b"{oops", binary(example()), "data: not valid JSON"),
    ("data-not-object", b"[]", binary(example()), "data: not a JSON object"),
    ("no-account", b'{"iam_id": "u"}', binary(example()), "data.account_id: Field required"),
    ("batch", encode(example()), [("content-type", b"application/cloudevents-batch+json")], ONLY),
    ("avro", encode(example()), [("content-type", b"application/cloudevents+avro")], ONLY),
]


@pytest.mark.parametrize(
    ("value", "headers", "message"),
    [pytest.param(v, h, m, id=name) for name, v, h, m in MALFORMED_BINARY],
)
def test_malformed_binary(value: bytes, headers: list[Header], message: str) -> None:
    """Each way a binary event (or an unsupported mode) can be wrong is malformed."""
    assert str(malformed(value, headers)).startswith(message)


def test_too_large() -> None:
    """A value over max_bytes is malformed before it is decoded."""
    with pytest.raises(MalformedEvent, match=r"^value: \d+ bytes, more than the maximum of 64$"):
        parse_record(encode(example()), STRUCTURED, types=TYPES, max_bytes=64)


def test_tombstone() -> None:
    """A record without a value (a tombstone) is malformed."""
    assert str(malformed(None)).startswith("value: missing")


def test_all_problems_reported() -> None:
    """Every invalid attribute is named, in one message."""
    err = malformed(encode(example(id="", source="")))
    assert str(err) == (
        "attribute 'id': String should have at least 1 character; "
        "attribute 'source': String should have at least 1 character"
    )


SECRET_CASES: list[tuple[str, bytes, list[Header]]] = [
    ("long-id", encode(example(id=SECRET * 20)), STRUCTURED),
    ("id-list", encode(example(id=[SECRET])), STRUCTURED),
    ("time", encode(example(time=SECRET)), STRUCTURED),
    ("specversion", encode(example(specversion=SECRET)), STRUCTURED),
    ("long-account", encode(with_data(account_id=SECRET * 10)), STRUCTURED),
    ("account-object", encode(with_data(account_id={"token": SECRET})), STRUCTURED),
    ("data-string", encode(example(data=SECRET)), STRUCTURED),
    ("broken-json", f'{{"id": "{SECRET}", '.encode(), STRUCTURED),
    ("bad-escape", f'{{"id": "{SECRET}\\q"}}'.encode(), STRUCTURED),
    (
        "content-type",
        encode(example()),
        [("content-type", b"application/cloudevents+" + SECRET.encode())],
    ),
    ("binary-id", DATA, [*binary(without("id")), ("ce_id", SECRET.encode() * 20)]),
    ("binary-time", DATA, binary(example(time=SECRET))),
    ("binary-data", f'{{"account_id": "{SECRET * 10}"}}'.encode(), binary(example())),
]


@pytest.mark.parametrize(
    ("value", "headers"), [pytest.param(v, h, id=name) for name, v, h in SECRET_CASES]
)
def test_message_never_quotes_the_record(value: bytes, headers: list[Header]) -> None:
    """Neither the message nor a logged traceback of the error contains record content."""
    err = malformed(value, headers)
    assert SECRET not in str(err)
    assert SECRET not in "".join(traceback.format_exception(err))


# --- properties -----------------------------------------------------------------------------

HEADER_NAMES = ["content-type", "Content-Type", "ce_specversion", "ce_id", "ce_source", "ce_type"]
HEADER_VALUES = [b"application/cloudevents+json", b"application/json", b"1.0", b"x"]
headers_strategy = st.lists(
    st.tuples(
        st.sampled_from([*HEADER_NAMES, "ce_time", "traceparent"]) | st.text(max_size=12),
        st.none() | st.sampled_from([*HEADER_VALUES, b"2026-11-26T14:03:07Z"]) | st.binary(),
    ),
    max_size=8,
)


def parses_or_is_malformed(value: bytes | None, headers: list[Header], max_bytes: int) -> None:
    """Assert parse_record returns an event or raises MalformedEvent, nothing else."""
    try:
        result = parse_record(value, headers, types=TYPES, max_bytes=max_bytes)
    except MalformedEvent:
        return
    assert isinstance(result, MembershipEvent | IgnoredEvent)


@given(
    value=st.none() | st.binary(max_size=512) | st.just(encode(example())),
    headers=headers_strategy,
    max_bytes=st.integers(min_value=0, max_value=1024),
)
def test_any_bytes_and_headers_parse_or_are_malformed(
    value: bytes | None, headers: list[Header], max_bytes: int
) -> None:
    """Arbitrary bytes and headers give an event or MalformedEvent, never another error."""
    parses_or_is_malformed(value, headers, max_bytes)


KEYS = ["specversion", "id", "source", "type", "time", "data", "account_id", "iam_id"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
)


@given(
    value=json_values
    | st.dictionaries(st.sampled_from(KEYS), json_values).map(
        lambda replaced: example() | replaced
    ),
    ensure_ascii=st.booleans(),
    headers=st.sampled_from([STRUCTURED, []]),
)
@settings(deadline=None)
def test_any_json_parses_or_is_malformed(
    value: object, ensure_ascii: bool, headers: list[Header]
) -> None:
    """Arbitrary JSON in structured mode gives an event or MalformedEvent, never another error."""
    parses_or_is_malformed(
        json.dumps(value, ensure_ascii=ensure_ascii).encode(), headers, MAX_BYTES
    )


def text(max_size: int) -> st.SearchStrategy[str]:
    """Valid attribute text: any characters but controls and surrogates."""
    return st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=max_size)


ROUND_TRIP_TYPES = EventTypes(added=frozenset({"in", "joined"}), removed=frozenset({"out"}))
offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@st.composite
def events(draw: st.DrawFn) -> tuple[MembershipEvent, datetime]:
    """A valid event, and its time as the producer wrote it (any offset)."""
    local: datetime = draw(
        st.datetimes(datetime(2, 1, 1), datetime(9998, 12, 31), timezones=offsets)
    )
    type_: str = draw(st.sampled_from(sorted(ROUND_TRIP_TYPES.added | ROUND_TRIP_TYPES.removed)))
    event = MembershipEvent(
        source=draw(text(1024)),
        id=draw(text(256)),
        type=type_,
        change=Change.REMOVED if type_ in ROUND_TRIP_TYPES.removed else Change.ADDED,
        time=local.astimezone(UTC),
        account_id=draw(text(128)),
        iam_id=draw(text(256)),
    )
    return event, local


def attributes(event: MembershipEvent, local: datetime) -> Event:
    """The CloudEvent attributes of `event`, its time in the producer's offset."""
    return {
        "specversion": "1.0",
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": local.isoformat(),
    }


def member(event: MembershipEvent) -> Event:
    """The data of `event`."""
    return {"account_id": event.account_id, "iam_id": event.iam_id}


@given(generated=events())
@settings(deadline=None)
def test_structured_round_trip(generated: tuple[MembershipEvent, datetime]) -> None:
    """Any valid event serialised in structured mode parses back to itself."""
    event, local = generated
    value = encode(attributes(event, local) | {"data": member(event)})
    parsed = parse_record(value, STRUCTURED, types=ROUND_TRIP_TYPES, max_bytes=MAX_BYTES)
    assert parsed == event


@given(generated=events())
@settings(deadline=None)
def test_binary_round_trip(generated: tuple[MembershipEvent, datetime]) -> None:
    """Any valid event serialised in binary mode parses back to itself."""
    event, local = generated
    headers = [(f"ce_{k}", v.encode()) for k, v in attributes(event, local).items()]
    value = json.dumps(member(event), ensure_ascii=False).encode()
    parsed = parse_record(
        value, [*headers, ("content-type", b"application/json")], types=ROUND_TRIP_TYPES,
        max_bytes=MAX_BYTES,
    )  # fmt: skip
    assert parsed == event
