"""`cleanup-worker dlq list | redrive` on the real broker and database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from cleanup_worker import __version__
from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.adapters.postgres.redrives import Redriven
from cleanup_worker.domain.events import EventTypes, MembershipEvent
from cleanup_worker.service.apply.classify import RecordClassifier
from cleanup_worker.service.dead_letters import fingerprint, inspect
from cleanup_worker.settings import Settings
from testkit.database import revoked_keys, seed_key
from testkit.events import at, event, structured
from testkit.kafka import end_offsets, publisher
from testkit.processes import cli, running_worker
from testkit.waiting import eventually

PADDING = "p" * 300  # makes the event larger than 256 bytes, the limit the worker ran with

CLASSIFY = RecordClassifier(EventTypes(), max_bytes=1024, max_future_skew_s=300)


async def cli_json(settings: Settings, *args: str, **extra: str) -> dict[str, Any]:
    code, out, err = await cli(settings, "dlq", *args, "--json", **extra)
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


@dataclass
class Story:
    key: UUID
    removal: MembershipEvent


@pytest.fixture
async def letters(settings: Settings, db: Any) -> Story:
    """Two dead letters from a worker whose limit was 256 bytes: a removal too large for it
    (it parses under today's default limit) and a record that is not JSON at all."""
    key = await seed_key(db, "acct", "big", at(0))
    removal = event("removed", "acct", "big", at(10))
    body = json.loads(structured(removal)[0])
    body["data"]["padding"] = PADDING
    strict = settings.model_copy(update={"max_event_bytes": 256})
    async with running_worker(strict), publisher(settings) as pub:
        await pub.raw(
            json.dumps(body).encode(),
            [("content-type", b"application/cloudevents+json")],
            key=b"acct/big",
            partition=1,
        )
        await pub.raw(b"{not json", key=b"garbage", partition=2)

        async def both_dead_lettered() -> bool:
            return await end_offsets(settings, settings.dlq_topic) == {0: 2}

        await eventually(both_dead_lettered)
    return Story(key, removal)


def _by_key(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {letter["original"]["key"]: letter for letter in document["letters"]}


async def test_list_shows_provenance_and_whether_each_parses_now(
    settings: Settings, letters: Story
) -> None:
    """Each dead letter shows where it came from, why it failed, and if it parses today."""
    code, out, err = await cli(settings, "dlq", "list", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert (document["dead_letters"], document["parses_now"], document["redriven"]) == (2, 1, 0)
    big, garbage = _by_key(document)["acct/big"], _by_key(document)["garbage"]
    assert big["original"] | {"timestamp": None} == {
        "topic": settings.kafka_topics[0],
        "partition": 1,
        "offset": 0,
        "timestamp": None,
        "key": "acct/big",
        "group": settings.kafka_group_id,
    }
    assert big["original"]["timestamp"] is not None
    assert big["error"]["class"] == "MalformedEvent"
    assert "maximum of 256" in big["error"]["message"]
    assert big["worker_version"] == __version__
    assert big["failed_at"] is not None
    assert (big["parses_now"], big["now"], big["error_now"]) == (True, "event", None)
    assert garbage["parses_now"] is False
    assert "not valid JSON" in garbage["error_now"]
    assert PADDING not in out


async def test_parses_now_follows_the_current_settings(settings: Settings, letters: Story) -> None:
    """Under the limit the worker had, the large event still does not parse."""
    document = await cli_json(settings, "list", CLEANUP_MAX_EVENT_BYTES="256")
    assert _by_key(document)["acct/big"]["parses_now"] is False
    assert document["parses_now"] == 0


async def test_redrive_dry_run_changes_nothing(settings: Settings, db: Any, letters: Story) -> None:
    """Without --execute, redrive reports what it would apply and writes nothing."""
    report = await cli_json(settings, "redrive")
    assert (report["execute"], report["redriven"], report["left"]) == (False, 1, 1)
    assert report["keys_revoked"] == 1
    assert await revoked_keys(db) == {}
    assert await db.fetchval("SELECT count(*) FROM dlq_redrives") == 0


async def test_redrive_applies_what_parses_now_and_keeps_the_rest(
    settings: Settings, db: Any, letters: Story
) -> None:
    """--execute applies the parseable letter as its original record and leaves the other."""
    report = await cli_json(settings, "redrive", "--execute")
    assert (report["redriven"], report["applied"], report["left"]) == (1, 1, 1)
    assert report["left_letters"][0]["reason"] == "malformed"
    assert await revoked_keys(db) == {letters.key: ("member_removed", letters.removal.ref)}
    origin = await db.fetchrow(
        "SELECT kafka_topic, kafka_partition, kafka_offset FROM membership_events"
    )
    assert tuple(origin) == (settings.kafka_topics[0], 1, 0)
    assert await end_offsets(settings, settings.dlq_topic) == {0: 2}


async def test_a_second_redrive_repeats_nothing(
    settings: Settings, db: Any, letters: Story
) -> None:
    """What was redriven is recorded; the next redrive skips it and still reports the rest."""
    await cli_json(settings, "redrive", "--execute")
    first = await db.fetchval("SELECT redriven_at FROM dlq_redrives")
    report = await cli_json(settings, "redrive", "--execute")
    assert (report["redriven"], report["already_redriven"], report["left"]) == (0, 1, 1)
    assert await db.fetchval("SELECT redriven_at FROM dlq_redrives") == first
    assert await db.fetchval("SELECT count(*) FROM membership_events") == 1


async def test_list_marks_the_letters_already_redriven(settings: Settings, letters: Story) -> None:
    """After a redrive, `dlq list` says which letters went back and with what outcome."""
    await cli_json(settings, "redrive", "--execute")
    document = await cli_json(settings, "list")
    assert document["redriven"] == 1
    assert _by_key(document)["acct/big"]["redriven"]["outcome"] == "applied"
    assert _by_key(document)["garbage"]["redriven"] is None


def test_a_different_record_at_a_redriven_place_is_not_taken_as_redriven() -> None:
    """If the topic was recreated, a new record at an old offset is judged on its own bytes."""
    record = Record("dlq", 0, 7, 0, b"k", b"{not json", ((dlq.H_TOPIC, b"events"),))
    other = Record("dlq", 0, 7, 0, b"k", b"{also not json", ((dlq.H_TOPIC, b"events"),))
    done = Redriven(fingerprint(other), "applied", datetime.now(UTC))
    assert inspect(record, CLASSIFY, done=done).redriven is None
    same = Redriven(fingerprint(record), "applied", datetime.now(UTC))
    assert inspect(record, CLASSIFY, done=same).redriven == same
