"""The records of one hostile-record run: valid events and hostile records mixed, with keys of
every shape, and records sized against the event limit and the broker's."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime

from tests.integration.hostile import CANARY, History, Shot
from tests.integration.hostile_makers import MAKERS, absurd_headers


def sized(h: History, max_bytes: int) -> Shot:
    """A valid event padded to exactly the size limit minus one, at it, or one byte over."""
    rng = h.rng
    e = h.new_event()
    delta = rng.choice([-1, 0, 1])
    parts = h.parts(e)
    parts.extra.append(("xpad", '""'))
    render = parts.structured if rng.random() < 0.5 else parts.binary
    value, _ = render(rng)
    parts.extra[-1] = ("xpad", json.dumps("p" * (max_bytes + delta - len(value))))
    value, headers = render(rng)
    assert len(value) == max_bytes + delta
    if delta > 0:
        return Shot("size.limit+1", "malformed", value, headers)
    h.sent.append(e)
    return Shot(f"size.limit{delta:+d}", "event", value, headers, event=e)


def broker_sized(key_bytes: int | None, value_bytes: int) -> Shot:
    """Garbage near or over the broker's message limit (about 1 MiB), in the value or the key."""
    text = CANARY * (max(key_bytes or 0, value_bytes) // len(CANARY) + 1)
    key = None if key_bytes is None else text.encode()[:key_bytes]
    kind = f"broker-sized.key={key_bytes}.value={value_bytes}"
    return Shot(kind, "malformed", text.encode()[:value_bytes], [], key=key)


def _key(rng: random.Random, shot: Shot) -> bytes | None:
    """Keys of every shape; nothing may depend on them."""
    roll = rng.random()
    if roll < 0.02:
        return rng.randbytes(rng.randrange(65_536, 200_000))
    if roll < 0.2:
        return None
    if roll < 0.3:
        return b""
    if roll < 0.5:
        return rng.randbytes(rng.randrange(1, 40))
    if roll < 0.55:
        return b"\xed\xa0\x80\x00" + CANARY.encode()
    if shot.event is not None:
        return f"{shot.event.account_id}/{shot.event.iam_id}".encode()
    return b"acct-0/user-0"


def mix(
    rng: random.Random, count: int, max_bytes: int, skew_s: float
) -> tuple[History, list[Shot]]:
    """`count` records: about half valid events (a fifth of them repeats), half hostile."""
    h = History(rng, datetime.now(UTC), skew_s)
    shots: list[Shot] = []
    weights = [1.0] * len(MAKERS)
    weights[MAKERS.index(absurd_headers)] = 0.3  # heavy on the broker; a few are enough
    for _ in range(count):
        roll = rng.random()
        if roll < 0.45:
            shot = h.next_valid()
        elif roll < 0.48:
            shot = sized(h, max_bytes)
        else:
            [maker] = rng.choices(MAKERS, weights)
            shot = maker(h)
        shots.append(dataclasses.replace(shot, key=_key(rng, shot)))
    return h, shots
