"""The hostile records themselves, one maker for each kind.

Each maker builds one kind of record and says what the event contract (docs/design.md,
docs/events.md) makes of it: an event (applied or duplicate), an ignored type, or a malformed record
(dead-lettered).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

from tests.integration.hostile import (
    CANARY,
    IGNORED_TYPES,
    Expect,
    History,
    Maker,
    Parts,
    Shot,
)

# Placeholder swapped for raw bytes after rendering: JSON text cannot hold invalid UTF-8.
_SLOT = "@@RAW@@"
_INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
                 b"\xc0\xaf", b"\xe2\x82"]  # fmt: skip
# Valid UTF-8 the contract forbids in text: C0 controls, DEL, C1 controls.
_RAW_CONTROLS = [b"\x00", b"\x01", b"\t", b"\n", b"\x1f", b"\x7f", b"\xc2\x85", b"\xc2\x9f"]
_ESCAPES = ["\\u0000", "\\u001f", "\\u007f", "\\u0085", "\\ud800", "\\udfff", "\\ude00\\ud83d"]
_TEXT_FIELDS = ["id", "source", "type", "account_id", "iam_id"]
_NOT_STRINGS = ["12345", "1.0", "-0", "1e400", "true", "null", "[]", "{}", '["x"]', "9" * 5000]
_BAD_TIMES = ["2026-02-30T00:00:00Z", "2026-01-01T23:59:60Z", "2026-01-01T00:00:00",
              "0000-01-01T00:00:00Z", "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00.Z",
              "２０２６-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00", "", "yesterday"]  # fmt: skip


def _valid_parts(h: History) -> Parts:
    """The parts of a fresh valid event that is never sent as such (not in the oracle)."""
    return h.parts(h.new_event())


def _set(parts: Parts, name: str, literal: str) -> None:
    if name in ("account_id", "iam_id"):
        parts.data[name] = literal
    else:
        parts.attrs[name] = literal


def _render(
    h: History, parts: Parts, raw: bytes = b""
) -> tuple[str, bytes, list[tuple[str, bytes | None]]]:
    structured = h.rng.random() < 0.5
    value, headers = parts.structured(h.rng) if structured else parts.binary(h.rng)
    value = value.replace(_SLOT.encode(), raw)
    headers = [(k, v.replace(_SLOT.encode(), raw) if v else v) for k, v in headers]
    return ("structured" if structured else "binary"), value, headers


def bad_bytes_in_text(h: History) -> Shot:
    """Invalid UTF-8, raw surrogates or raw control characters inside a text field, in the
    value (structured), in a header value (binary attributes) or in data (binary)."""
    rng = h.rng
    raw = rng.choice(_INVALID_UTF8 + _RAW_CONTROLS)
    parts = _valid_parts(h)
    _set(parts, rng.choice(_TEXT_FIELDS), json.dumps(f"{CANARY}{_SLOT}x"))
    mode, value, headers = _render(h, parts, raw)
    return Shot(f"bad-bytes.{mode}", "malformed", value, headers)


def escapes_in_text(h: History) -> Shot:
    """NUL, controls and lone or reversed surrogates written as JSON escapes."""
    rng = h.rng
    field = rng.choice(_TEXT_FIELDS)
    parts = _valid_parts(h)
    _set(parts, field, f'"{CANARY}{rng.choice(_ESCAPES)}"')
    # Attributes are JSON only in structured mode (a header holds the escape as plain text).
    if field in parts.data and rng.random() < 0.5:
        value, headers = parts.binary(rng)
        return Shot("escape.binary", "malformed", value, headers)
    value, headers = parts.structured(rng)
    return Shot("escape.structured", "malformed", value, headers)


def literal_escape_in_header(h: History) -> Shot:
    """A binary-mode header holds text, so `\\ud800` there is six characters: a valid id."""
    e = h.new_event()
    e = dataclasses.replace(e, id=f"\\ud800-{e.id}"[:256])
    h.sent.append(e)
    parts = h.parts(e)
    value, headers = parts.binary(h.rng)
    return Shot("literal-escape.binary", "event", value, headers, event=e)


def duplicate_header(h: History) -> Shot:
    """A binary record with one of the headers the parser reads given twice."""
    rng = h.rng
    value, headers = _valid_parts(h).binary(rng)
    names = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type"]
    name = rng.choice(names)
    current = dict(headers).get(name) or b"application/json"
    again = rng.choice([current, CANARY.encode()])
    headers.insert(rng.randrange(len(headers) + 1), (name, again))
    if name == "content-type" and sum(1 for k, _ in headers if k == name) < 2:
        headers.append((name, current))
    return Shot("duplicate-header.binary", "malformed", value, headers)


def absurd_headers(h: History) -> Shot:
    """Thousands of headers, or one of hundreds of KiB, beside the event's own: ignored."""
    rng = h.rng
    e = h.new_event()
    h.sent.append(e)
    shot = h.record(e, "absurd-headers")
    junk: list[tuple[str, bytes | None]] = []
    if rng.random() < 0.5:
        for i in range(rng.choice([1000, 3000])):
            junk.append((rng.choice([f"x-{i}", "x-dup", ""]), rng.choice([None, b"", b"\xff\x00"])))
    else:
        junk.append(("x-huge", rng.randbytes(rng.randrange(100_000, 400_000))))
    headers = junk + shot.headers if rng.random() < 0.5 else shot.headers + junk
    return Shot(shot.kind, "event", shot.value, headers, event=e)


def odd_headers_on_event(h: History) -> Shot:
    """Headers the parser does not read, carrying invalid UTF-8, nulls, or fake provenance."""
    rng = h.rng
    e = h.new_event()
    h.sent.append(e)
    shot = h.record(e, "odd-headers")
    odd: list[tuple[str, bytes | None]] = [
        ("traceparent", b"\xff\xfe" + CANARY.encode()), ("x-null", None), ("x-null", None),
        ("dlq.original.offset", b"12"), ("dlq.error.class", b"Spoofed"), ("ce_subject", b"\x00"),
    ]  # fmt: skip
    return Shot(shot.kind, "event", shot.value, shot.headers + rng.sample(odd, 3), event=e)


def spoofed_provenance(h: History) -> Shot:
    """A malformed record that claims to be a dead letter already: the worker's own
    provenance must replace it."""
    headers: list[tuple[str, bytes | None]] = [
        ("dlq.original.topic", b"elsewhere"), ("dlq.original.offset", b"999999"),
        ("dlq.error.class", b"Spoofed"), ("dlq.value.dropped", b"1"),
    ]  # fmt: skip
    return Shot("spoofed-provenance", "malformed", f"{{{CANARY}".encode(), headers)


def deep_nesting(h: History) -> Shot:
    """JSON nested thousands deep: in an extension, in data, or under an ignored type."""
    rng = h.rng
    depth = rng.randrange(2_000, 15_000)
    deep = "[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth
    parts = _valid_parts(h)
    parts.extra.append(("xdeep", deep))  # structured: an extension; binary: a data member
    if rng.random() < 0.3:
        parts.attrs["type"] = json.dumps(rng.choice(IGNORED_TYPES))
        value, headers = parts.structured(rng)  # a structured value is decoded whatever its type
        mode = "structured-ignored-type"
    else:
        mode, value, headers = _render(h, parts)
    return Shot(f"deep.{mode}", "malformed", value, headers)


def not_a_string(h: History) -> Shot:
    """A number, boolean, null, array or object where a string belongs."""
    rng = h.rng
    parts = _valid_parts(h)
    field = rng.choice([*_TEXT_FIELDS, "time", "specversion", "data"])
    literal = rng.choice(_NOT_STRINGS)
    if field == "data":
        parts.data.clear()
        value, headers = parts.structured(rng)
        value = value.replace(b'"data": {}', f'"data": {literal}'.encode())
        return Shot("not-a-string.data", "malformed", value, headers)
    _set(parts, field, literal)
    if field in parts.data and rng.random() < 0.5:
        value, headers = parts.binary(rng)
        return Shot("not-a-string.binary", "malformed", value, headers)
    value, headers = parts.structured(rng)
    return Shot(f"not-a-string.{field}", "malformed", value, headers)


def bad_attribute(h: History) -> Shot:
    """Out-of-range lengths, wrong specversions and times that RFC 3339 refuses."""
    rng = h.rng
    parts = _valid_parts(h)
    field, literal = rng.choice(
        [("id", json.dumps("i" * 257)), ("id", '""'), ("source", json.dumps("s" * 1025)),
         ("account_id", json.dumps("a" * 129)), ("iam_id", json.dumps("u" * 257)),
         ("account_id", '""'), ("specversion", '"1.0 "'), ("specversion", '"0.3"'),
         ("time", json.dumps(rng.choice(_BAD_TIMES)))]
    )  # fmt: skip
    _set(parts, field, literal)
    mode, value, headers = _render(h, parts)
    return Shot(f"bad-attribute.{field}.{mode}", "malformed", value, headers)


def bad_json(h: History) -> Shot:
    """Values json.loads might accept but an event must not be: NaN, duplicate keys, a BOM,
    arrays, strings, truncation, plain garbage, a batch."""
    rng = h.rng
    value, headers = _valid_parts(h).structured(rng)
    choice = rng.randrange(7)
    if choice == 0:
        value = value.replace(b"{", b'{"xnan": NaN, ', 1)
    elif choice == 1:
        value = value.replace(b"{", f'{{"id": "{CANARY}", '.encode(), 1)
    elif choice == 2:
        value = b"\xef\xbb\xbf" + value
    elif choice == 3:
        value = b"[" + value + b"]"
    elif choice == 4:
        value = value[: rng.randrange(1, len(value))]
    elif choice == 5:
        value = json.dumps(value.decode()).encode()
    else:
        headers = [("content-type", b"application/cloudevents-batch+json")]
        value = b"[" + value + b"]"
    return Shot(f"bad-json.{choice}", "malformed", value, headers)


def empty_or_tombstone(h: History) -> Shot:
    """Empty values and tombstones, with event headers; an empty value of an ignored binary
    type is ignored (its data is never decoded), a tombstone never."""
    rng = h.rng
    parts = _valid_parts(h)
    ignored = rng.random() < 0.3
    if ignored:
        parts.attrs["type"] = json.dumps(rng.choice(IGNORED_TYPES))
    _, headers = (parts.structured if rng.random() < 0.5 else parts.binary)(rng)
    value = rng.choice([None, b""])
    binary = any(k == "ce_specversion" for k, _ in headers)
    expect: Expect = "ignored" if ignored and binary and value == b"" else "malformed"
    what = "tombstone" if value is None else "empty"
    return Shot(f"{what}.{'binary' if binary else 'structured'}", expect, value, headers)


def ignored_type(h: History) -> Shot:
    """Another type, whose data (binary: the value) is never read, however bad it is."""
    rng = h.rng
    parts = _valid_parts(h)
    parts.attrs["type"] = json.dumps(rng.choice(IGNORED_TYPES))
    if rng.random() < 0.5:
        parts.data.clear()
        value, headers = parts.structured(rng)
        data = rng.choice([b"42", b'"text"', b"null", b'{"account_id": 7}'])
        value = value.replace(b'"data": {}', b'"data": ' + data)
        return Shot("ignored.structured", "ignored", value, headers)
    _, headers = parts.binary(rng)
    headers = [(k, v) for k, v in headers if k != "content-type"] + [
        ("content-type", b"text/plain")
    ]
    value = rng.choice([b"\xff\xfe" + CANARY.encode(), b"<xml/>", b"[1, 2]", b"{"])
    return Shot("ignored.binary", "ignored", value, headers)


def mixed_modes(h: History) -> Shot:
    """A structured value beside ce_ headers that say something else: the cloudevents
    content-type makes the value the event; without it, ce_specversion makes the record
    binary, and the value is then data with no member in it."""
    rng = h.rng
    e = h.new_event()
    value, _ = h.parts(e).structured(rng)
    _, decoy = h.parts(h.new_event()).binary(rng)
    decoy = [(k, v) for k, v in decoy if k != "content-type"]
    if rng.random() < 0.5:
        h.sent.append(e)
        headers = [*decoy, ("content-type", b"application/cloudevents+json")]
        return Shot("mixed-modes.structured", "event", value, headers, event=e)
    headers = [*decoy, ("content-type", b"application/json")]
    return Shot("mixed-modes.binary", "malformed", value, headers)


def future_dated(h: History) -> Shot:
    """An event dated beyond the allowed clock skew, by an hour or to the year 9999: not
    applied but dead-lettered to be redriven in time; or just within it: applied."""
    rng = h.rng
    skew = timedelta(seconds=h.skew_s)
    if rng.random() < 0.3:
        e = dataclasses.replace(h.new_event(), time=h.now + skew - timedelta(minutes=2))
        h.sent.append(e)
        return h.record(e, "future.within-skew")
    # An hour beyond, so that it stays beyond however long a long run takes to get to it.
    ahead = rng.choice([h.now + skew + timedelta(hours=1), datetime(9999, 12, 30, tzinfo=UTC)])
    shot = h.record(dataclasses.replace(h.new_event(), time=ahead), "future.beyond-skew")
    return dataclasses.replace(shot, expect="future", event=None)


MAKERS: list[Maker] = [bad_bytes_in_text, escapes_in_text, literal_escape_in_header,
                       duplicate_header, absurd_headers, odd_headers_on_event, spoofed_provenance,
                       deep_nesting, not_a_string, bad_attribute, bad_json, empty_or_tombstone,
                       ignored_type, mixed_modes, future_dated]  # fmt: skip
