"""Records for the hostile-record test: valid events of a random membership history, mixed with
records built to break a parser, each labelled with the outcome the event contract
(docs/design.md, docs/events.md) gives it.

Every value is written as raw JSON text rather than through json.dumps, so that a record can
carry what json.dumps never writes: lone surrogate escapes, raw control characters, duplicate
keys, numbers too large for Python, invalid UTF-8.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from cleanup_worker.domain.events import Change, MembershipEvent

# An event applies (or is a duplicate); "future": dated beyond the allowed clock skew.
Expect = Literal["event", "ignored", "malformed", "future"]
Headers = list[tuple[str, bytes | None]]
Member = tuple[str, str]

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Found in every hostile record's payload: the worker's logs must never contain it.
CANARY = "canary-7f3c"

# Unusual but valid text: the worker must treat these exactly like plain ASCII.
MEMBERS: list[Member] = [
    *((f"acct-{a}", f"user-{u}") for a in range(4) for u in range(6)),
    ("acct-ünïcødé", "IBMid-😀"),
    ("a" * 128, "u" * 256),
    ('quote"back\\slash', "line\u2028sep\u2029"),
    ("ℌ𝔢𝔩𝔩𝔬 שלום", "\u200fbidi\ufeffbom"),
    ("acct/with/slashes", "\\ud800"),  # a literal backslash-u, not a surrogate
]
SOURCES = ["/accounts", "urn:accounts:eu", "https://iam.example/accounts?x=1#f", "s" * 1024]
IGNORED_TYPES = ["account.renamed", "Account.Member.Removed", "account.member.added.v2", "a ☃"]


def _text(value: str, rng: random.Random) -> str:
    """A JSON string literal, with non-ASCII either raw or escaped (surrogate pairs)."""
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


def _obj(pairs: list[tuple[str, str]]) -> str:
    """A JSON object from already-rendered member values, in the order given."""
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in pairs) + "}"


def render_time(time: datetime, rng: random.Random) -> str:
    """One of the RFC 3339 spellings of exactly this instant."""
    style = rng.randrange(5)
    if style == 1:
        time = time.astimezone(timezone(timedelta(hours=5, minutes=30)))
    elif style == 2:
        time = time.astimezone(timezone(-timedelta(hours=8)))
    text = time.isoformat()
    if style == 3:
        text = text.replace("+00:00", "Z")
    elif style == 4:
        text = text.replace("+00:00", "z").replace("T", "t")
    if time.microsecond and rng.random() < 0.3:  # nanosecond digits that change nothing
        text = text.replace(f".{time.microsecond:06d}", f".{time.microsecond:06d}000")
    return text


@dataclass(frozen=True)
class Shot:
    """One record to produce, and what the worker must make of it."""

    kind: str
    expect: Expect
    value: bytes | None
    headers: Headers
    key: bytes | None = None
    event: MembershipEvent | None = None

    @property
    def size(self) -> int:
        """Bytes of the record's key, value and headers."""
        headers = sum(len(k.encode()) + len(v or b"") for k, v in self.headers)
        return len(self.key or b"") + len(self.value or b"") + headers


@dataclass
class Parts:
    """An event as attributes and data, rendered JSON text, before it becomes a record."""

    attrs: dict[str, str]  # attribute name -> JSON literal
    data: dict[str, str]  # data member -> JSON literal
    extra: list[tuple[str, str]] = field(default_factory=list)  # extensions, raw JSON

    def structured(self, rng: random.Random) -> tuple[bytes, Headers]:
        pairs = [*self.attrs.items(), *self.extra]
        rng.shuffle(pairs)
        value = _obj([*pairs, ("data", _obj(list(self.data.items())))])
        # Without ce_ headers a JSON object with specversion is structured, whatever the
        # content-type says (the event contract: the Python SDK 1.x writes its datacontenttype).
        ctype = rng.choice(
            [b"application/cloudevents+json", b"application/cloudevents+json; charset=UTF-8",
             b"application/json", b"text/plain", None]
        )  # fmt: skip
        return value.encode(), [] if ctype is None else [("content-type", ctype)]

    def binary(self, rng: random.Random) -> tuple[bytes, Headers]:
        headers: Headers = []
        for name, literal in self.attrs.items():
            if name != "datacontenttype":
                headers.append((f"ce_{name}", json.loads(literal).encode()))
        rng.shuffle(headers)
        ctype = rng.choice([b"application/json", b"application/json; charset=utf-8", None])
        if ctype is not None:
            headers.append(("content-type", ctype))
        return _obj([*self.data.items(), *self.extra]).encode(), headers


class History:
    """Random valid events over MEMBERS, rendered in either content mode."""

    def __init__(self, rng: random.Random, now: datetime, skew_s: float) -> None:
        self.rng = rng
        self.now = now  # the worker's clock, near enough, for future-dated events
        self.skew_s = skew_s
        self.sent: list[MembershipEvent] = []

    def new_event(self) -> MembershipEvent:
        rng = self.rng
        account, iam = rng.choice(MEMBERS)
        change = rng.choice(list(Change))
        micro = rng.choice([0, rng.randrange(1_000_000)])
        # Few distinct times, so that ties (broken by id) happen.
        time = T0 + timedelta(minutes=rng.randrange(0, 120, 5), microseconds=micro)
        event_id = rng.choice(
            [uuid.UUID(int=rng.getrandbits(128)).hex, f"id-{rng.getrandbits(64)}-ü😀\u2028"]
        )
        if rng.random() < 0.05:
            event_id = (event_id * 20)[:256]
        return MembershipEvent(
            source=rng.choice(SOURCES),
            id=event_id,
            type=f"account.member.{change.value}",
            change=change,
            time=time,
            account_id=account,
            iam_id=iam,
        )

    def parts(self, e: MembershipEvent) -> Parts:
        rng = self.rng
        attrs = {
            "specversion": '"1.0"',
            "id": _text(e.id, rng),
            "source": _text(e.source, rng),
            "type": _text(e.type, rng),
            "time": json.dumps(render_time(e.time, rng)),
        }
        if rng.random() < 0.5:
            attrs["datacontenttype"] = '"application/json"'
        data = {"account_id": _text(e.account_id, rng), "iam_id": _text(e.iam_id, rng)}
        return Parts(attrs, data)

    def record(self, e: MembershipEvent, kind: str = "valid") -> Shot:
        rng = self.rng
        parts = self.parts(e)
        if rng.random() < 0.3:  # extensions and extra fields are ignored, whatever they hold
            parts.extra.append(("x" + CANARY.replace("-", ""), _text(CANARY, rng)))
            parts.extra.append(("xnested", "[" * 100 + "1e400" + "]" * 100))
            parts.extra.append(("xemoji", '"\\ud83d\\ude00 \\u0061"'))
        structured = rng.random() < 0.5
        value, headers = parts.structured(rng) if structured else parts.binary(rng)
        mode = "structured" if structured else "binary"
        return Shot(f"{kind}.{mode}", "event", value, headers, event=e)

    def next_valid(self) -> Shot:
        """A new event, or (one time in five) one already sent, maybe in the other mode."""
        if self.sent and self.rng.random() < 0.2:
            return self.record(self.rng.choice(self.sent), "valid.repeat")
        e = self.new_event()
        self.sent.append(e)
        return self.record(e)


Maker = Callable[[History], Shot]
