"""Malformed records go to the dead-letter topic, untouched, with provenance; nothing is lost."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cleanup_worker import __version__
from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, binary, event, structured
from testkit.kafka import (
    committed_offsets,
    end_offsets,
    publisher,
    read_topic,
    send_null_record,
)
from testkit.processes import running_worker
from testkit.waiting import eventually

_GOOD = event("removed", "acct", "alice", at(10))
_S_VALUE, _S_HEADERS = structured(_GOOD)
_B_VALUE, _B_HEADERS = binary(_GOOD)


def _without(headers: list[tuple[str, bytes]], name: str) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in headers if k != name]


def _structured_with(**changes: Any) -> bytes:
    body = json.loads(_S_VALUE)
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


MALFORMED: dict[str, tuple[bytes | None, list[tuple[str, bytes]]]] = {
    "not json": (b"{not json", _S_HEADERS),
    "tombstone": (None, _S_HEADERS),
    "structured missing id": (_structured_with(id=None), _S_HEADERS),
    "structured bad time": (_structured_with(time="yesterday"), _S_HEADERS),
    "structured wrong specversion": (_structured_with(specversion="0.3"), _S_HEADERS),
    "structured too large": (_structured_with(padding="x" * 70_000), _S_HEADERS),
    "structured data not object": (_structured_with(data=[1, 2]), _S_HEADERS),
    "binary missing ce_id": (_B_VALUE, _without(_B_HEADERS, "ce_id")),
    "binary bad time": (_B_VALUE, [*_without(_B_HEADERS, "ce_time"), ("ce_time", b"12:00")]),
    "binary data not json": (b"<xml/>", _B_HEADERS),
    "binary account id too long": (
        json.dumps({"account_id": "a" * 129, "iam_id": "u"}).encode(),
        _B_HEADERS,
    ),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
async def test_malformed_record_is_dead_lettered_with_provenance(
    settings: Settings, db: Any, kind: str
) -> None:
    """Each malformed kind lands in the DLQ byte for byte with provenance headers, and its
    offset is committed so the partition moves on."""
    value, headers = MALFORMED[kind]
    async with publisher(settings) as pub, running_worker(settings):
        await pub.raw(value, headers, key=b"the-key", partition=2)

        async def committed() -> bool:
            return (await committed_offsets(settings)).get(2) == 1

        await eventually(committed)
    [letter] = await read_topic(settings, settings.dlq_topic)
    assert letter.value == value
    assert letter.key == b"the-key"
    got = dict(letter.headers)
    for name, original in headers:
        assert got[name] == original
    provenance = dlq.decode_provenance(got)
    assert provenance[dlq.H_TOPIC] == settings.kafka_topics[0]
    assert (provenance[dlq.H_PARTITION], provenance[dlq.H_OFFSET]) == ("2", "0")
    assert provenance[dlq.H_GROUP] == settings.kafka_group_id
    assert provenance[dlq.H_ERROR_CLASS] == "MalformedEvent"
    assert provenance[dlq.H_ERROR_MESSAGE]
    assert provenance[dlq.H_VERSION] == __version__
    assert provenance[dlq.H_KEY] == "the-key"
    assert int(provenance[dlq.H_TIMESTAMP]) > 0
    assert await ledger_size(db) == 0


async def test_malformed_record_does_not_hold_back_its_batch(settings: Settings, db: Any) -> None:
    """Good events around a malformed one in the same partition are applied."""
    key = await seed_key(db, "acct", "alice", at(0))
    async with publisher(settings) as pub, running_worker(settings):
        await pub.raw(b"garbage", partition=0)
        await pub.events([_GOOD], partition=0)
        await pub.raw(b"more garbage", partition=0)

        async def done() -> bool:
            return (await committed_offsets(settings)).get(0) == 3

        await eventually(done)
    assert await revoked_keys(db) == {key: ("member_removed", _GOOD.ref)}
    assert len(await read_topic(settings, settings.dlq_topic)) == 2


async def test_unknown_type_is_skipped_and_committed(settings: Settings, db: Any) -> None:
    """A valid CloudEvent of another type changes nothing, is not dead-lettered, and is
    committed."""
    value = _structured_with(type="account.renamed")
    async with publisher(settings) as pub, running_worker(settings):
        await pub.raw(value, _S_HEADERS, partition=1)

        async def committed() -> bool:
            return (await committed_offsets(settings)).get(1) == 1

        await eventually(committed)
    assert await read_topic(settings, settings.dlq_topic) == []
    assert await ledger_size(db) == 0


async def test_event_the_database_rejects_is_isolated(settings: Settings, db: Any) -> None:
    """An event that fails in the database for a data reason is dead-lettered with the
    reason, while the rest of its batch applies."""
    key = await seed_key(db, "acct", "alice", at(0))
    # A constraint the event contract does not know about: the database is the last word.
    await db.execute("ALTER TABLE membership_events ADD CONSTRAINT no_bob CHECK (iam_id <> 'bob')")
    bad = event("removed", "acct", "bob", at(10))
    async with publisher(settings) as pub, running_worker(settings):
        await pub.events([bad, _GOOD], partition=0)

        async def done() -> bool:
            return (await committed_offsets(settings)).get(0) == 2

        await eventually(done)
    assert await revoked_keys(db) == {key: ("member_removed", _GOOD.ref)}
    [letter] = await read_topic(settings, settings.dlq_topic)
    provenance = dlq.decode_provenance(dict(letter.headers))
    assert provenance[dlq.H_ERROR_CLASS] == "CheckViolationError"
    assert "23514" in provenance[dlq.H_ERROR_MESSAGE]
    assert await end_offsets(settings) == {0: 2, 1: 0, 2: 0}


@pytest.mark.parametrize("key", [b"big", None], ids=["with key", "without key"])
async def test_record_too_large_to_forward_is_dead_lettered_without_its_value(
    settings: Settings, db: Any, key: bytes | None
) -> None:
    """A malformed record so large that the provenance pushes it over Kafka's limit is
    dead-lettered with its provenance and its size, and an empty value (not a tombstone),
    instead of blocking the partition or crashing the worker."""
    value = b"x" * 1_048_200  # fits the producer's 1 MiB request limit only without our headers
    async with publisher(settings) as pub, running_worker(settings):
        await pub.raw(value, [], key=key, partition=1)

        async def committed() -> bool:
            return (await committed_offsets(settings)).get(1) == 1

        await eventually(committed)
    [letter] = await read_topic(settings, settings.dlq_topic)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (key, b"")
    assert headers[dlq.H_VALUE_DROPPED] == b"1048200"
    assert dlq.decode_provenance(headers)[dlq.H_OFFSET] == "0"
    assert await ledger_size(db) == 0


async def test_record_with_a_key_too_large_to_copy_keeps_its_value(
    settings: Settings, db: Any
) -> None:
    """A malformed record whose key is too large to repeat in dlq.original.key is
    dead-lettered whole, under its own key, without that copy."""
    key = b"k" * 600_000
    async with publisher(settings) as pub, running_worker(settings):
        await pub.raw(b"{not json", [("x-trace", b"1")], key=key, partition=0)

        async def committed() -> bool:
            return (await committed_offsets(settings)).get(0) == 1

        await eventually(committed)
    [letter] = await read_topic(settings, settings.dlq_topic)
    headers = dict(letter.headers)
    assert (letter.key, letter.value, headers["x-trace"]) == (key, b"{not json", b"1")
    assert dlq.H_KEY not in headers
    assert dlq.decode_provenance(headers)[dlq.H_ERROR_CLASS] == "MalformedEvent"


async def test_record_whose_key_alone_fills_the_limit_is_dead_lettered_without_it(
    settings: Settings, db: Any
) -> None:
    """A malformed record whose key leaves no room for the provenance is dead-lettered
    without key and value, with both sizes, instead of crashing the worker."""
    async with publisher(settings) as pub, running_worker(settings):
        await pub.raw(b"", [], key=b"k" * 1_048_400, partition=0)

        async def committed() -> bool:
            return (await committed_offsets(settings)).get(0) == 1

        await eventually(committed)
    [letter] = await read_topic(settings, settings.dlq_topic)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (None, b"")
    assert (headers[dlq.H_KEY_DROPPED], headers[dlq.H_VALUE_DROPPED]) == (b"1048400", b"0")
    assert dlq.decode_provenance(headers)[dlq.H_OFFSET] == "0"


async def test_tombstone_without_a_key_is_dead_lettered(settings: Settings, db: Any) -> None:
    """A record with neither key nor value (which aiokafka cannot write back as it is) is
    dead-lettered as a tombstone with an empty key, without dlq.original.key, and an error
    naming the tombstone."""
    async with publisher(settings) as pub, running_worker(settings):
        await send_null_record(pub.producer, pub.topic, 2, [("x-trace", b"1")])

        async def committed() -> bool:
            return (await committed_offsets(settings)).get(2) == 1

        await eventually(committed)
    [letter] = await read_topic(settings, settings.dlq_topic)
    headers = dict(letter.headers)
    assert (letter.key, letter.value, headers["x-trace"]) == (b"", None, b"1")
    assert dlq.H_KEY not in headers
    assert "tombstone" in dlq.decode_provenance(headers)[dlq.H_ERROR_MESSAGE]
