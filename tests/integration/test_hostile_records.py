"""Thousands of hostile records, mixed with valid events, through the real broker into a running
`cleanup-worker run` process (issue 10, item 4).

Seeded: each run prints its seed (it is also in the test id). Reproduce one with
`CLEANUP_FUZZ_SEED=<seed> CLEANUP_FUZZ_RUNS=1`; `CLEANUP_FUZZ_RECORDS` sets the records a run
(default 2000), `CLEANUP_FUZZ_RUNS` the runs (default 3, seeds SEED, SEED+1, ...). `make fuzz`
runs it longer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from cleanup_worker import __version__
from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.domain.events import MembershipEvent
from cleanup_worker.settings import Settings
from testkit.database import database_state, outbox_notices, seed_key
from testkit.kafka import committed_offsets, create_topic, end_offsets, read_topic
from testkit.metrics import scrape
from testkit.processes import cli, free_port, http_get, spawn_worker
from testkit.waiting import eventually
from tests.integration.hostile import CANARY, MEMBERS, T0, Shot
from tests.integration.hostile_mix import broker_sized, mix
from tests.integration.hostile_producers import Place, fits_whole, produce
from tests.oracle import KeyFact, expected_state

SEED_ENV, RECORDS_ENV, RUNS_ENV = "CLEANUP_FUZZ_SEED", "CLEANUP_FUZZ_RECORDS", "CLEANUP_FUZZ_RUNS"
RECORDS = int(os.environ.get(RECORDS_ENV, "2000"))
RUNS = int(os.environ.get(RUNS_ENV, "3"))
BASE_SEED = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
# The error class of each kind of dead letter.
CLASSES = {"malformed": "MalformedEvent", "future": "FutureDatedEvent"}
# (key bytes, value bytes) around the broker's message.max.bytes (1 MiB by default): whole;
# without the value (with a key and without); without the key copy; without the key; and the
# last refused by the broker itself, so that it never counts as sent.
BROKER_SIZED = [(None, 1_040_000), (None, 1_048_200), (3, 1_048_200), (600_000, 1),
                (1_048_400, 0), (None, 1_200_000)]  # fmt: skip


async def _watch(worker: asyncio.subprocess.Process, port: int, problems: list[str]) -> None:
    """Until cancelled: the same process stays alive and /livez answers 200."""
    while True:
        if worker.returncode is not None:
            problems.append(f"worker exited with {worker.returncode}")
            return
        try:
            status, body = await asyncio.wait_for(http_get(port, "/livez"), 5)
        except (OSError, TimeoutError) as exc:
            problems.append(f"/livez unreachable: {exc!r}")
        else:
            if status != 200:
                problems.append(f"/livez {status}: {body.strip()}")
        await asyncio.sleep(0.25)


async def _seed_keys(db: Any, rng: random.Random) -> list[KeyFact]:
    facts = []
    for account, iam in MEMBERS:
        for _ in range(rng.randrange(1, 4)):
            created = T0 + timedelta(minutes=rng.randrange(-10, 130))
            key_id = await seed_key(db, account, iam, created)
            facts.append(KeyFact(str(key_id), account, iam, created, revoked=False))
    return facts


async def _events_total(port: int) -> Counter[str]:
    """cleanup_events_total from /metrics, summed by outcome."""
    totals: Counter[str] = Counter()
    for (name, labels), value in (await scrape(port)).samples.items():
        if name == "cleanup_events_total":
            totals[dict(labels)["outcome"]] += int(value)
    return totals


def _expected_outcomes(sent: dict[Place, Shot]) -> Counter[str]:
    events = [s.event for s in sent.values() if s.event is not None]
    unique = {(e.source, e.id) for e in events}
    kinds = Counter(s.expect for s in sent.values())
    return Counter(
        applied=len(unique),
        duplicate=len(events) - len(unique),
        ignored=kinds["ignored"],
        dead_lettered=kinds["malformed"] + kinds["future"],
    )


def _original_place(letter: Any) -> Place:
    provenance = dlq.decode_provenance(dict(letter.headers))
    return int(provenance[dlq.H_PARTITION]), int(provenance[dlq.H_OFFSET])


def _check_dead_letter(letter: Any, place: Place, shot: Shot, settings: Settings) -> bool:
    """Provenance that tells the truth, and the original record, byte for byte (less what
    adapters/kafka/dead_letter_topic.py drops, with its size, from a record too large to
    forward whole); says whether anything was dropped."""
    headers = [(name, value) for name, value in letter.headers]
    provenance = {name: value for name, value in headers if name in dlq.PROVENANCE_HEADERS}
    key_size = provenance.pop(dlq.H_KEY_DROPPED, None)
    value_size = provenance.pop(dlq.H_VALUE_DROPPED, None)
    copied = dlq.H_KEY in provenance
    reduced = key_size is not None or value_size is not None or copied != (shot.key is not None)
    if fits_whole(shot):
        assert not reduced, f"{shot.kind} was not forwarded whole"
    # A record with neither key nor value is the one a Kafka client cannot write back: its
    # letter has an empty key (adapters/kafka/dead_letter_topic.py), and no dlq.original.key.
    nothing = shot.key is None and shot.value is None
    if key_size is None:
        assert letter.key == (b"" if nothing else shot.key)
    else:
        assert (letter.key, key_size) == (None, str(len(shot.key or b"")).encode())
    if copied:
        assert provenance[dlq.H_KEY] == shot.key
    if value_size is None:
        assert letter.value == shot.value, shot.kind
        own = [(name, value) for name, value in shot.headers if name not in dlq.PROVENANCE_HEADERS]
        assert headers[: len(own)] == own, shot.kind
        assert len(headers) == len(own) + len(provenance)
    else:
        assert (letter.value, value_size) == (b"", str(len(shot.value or b"")).encode())
    text = dlq.decode_provenance(provenance)
    assert text[dlq.H_TOPIC] == settings.kafka_topics[0]
    assert (int(text[dlq.H_PARTITION]), int(text[dlq.H_OFFSET])) == place
    assert text[dlq.H_GROUP] == settings.kafka_group_id
    assert text[dlq.H_ERROR_CLASS] == CLASSES[shot.expect]
    assert text[dlq.H_ERROR_MESSAGE]
    assert CANARY not in text[dlq.H_ERROR_MESSAGE]
    assert text[dlq.H_VERSION] == __version__
    assert int(text[dlq.H_TIMESTAMP]) > 0
    assert int(text[dlq.H_FAILED_AT]) > 0
    return reduced


async def _check_dlq_commands(settings: Settings, dead: dict[Place, Shot]) -> None:
    """`dlq list` (JSON and text) and a `dlq redrive` dry run read every letter: the
    future-dated ones would apply once their time has come, the rest does not parse now; a
    dry-run redrive leaves them all."""
    code, out, err = await cli(settings, "dlq", "list", "--json")
    assert code == 0, err[-2000:]
    listing = json.loads(out)
    now = {
        (d["original"]["partition"], d["original"]["offset"]): d["now"] for d in listing["letters"]
    }
    assert now == {place: shot.expect for place, shot in dead.items()}
    assert listing["dead_letters"] == len(dead)
    assert not [d for d in listing["letters"] if CANARY in (d["error"]["message"] or "")]
    code, out, err = await cli(settings, "dlq", "list")
    assert code == 0, err[-2000:]
    assert out.startswith(f"{len(dead)} dead letter(s)")
    code, out, err = await cli(settings, "dlq", "redrive", "--json")
    assert code == 0, err[-2000:]
    report = json.loads(out)
    assert report["dead_letters"] == report["left"] == len(dead)
    assert report["redriven"] == 0


async def _check_notices(settings: Settings, db: Any) -> None:
    """Every revoked key announced, under its owner's Kafka key and with its owner in the
    data, however unusual their ids."""
    assert settings.revocations_topic is not None
    rows = await db.fetch(
        "SELECT id, account_id, iam_id FROM api_keys WHERE revoked_at IS NOT NULL"
    )
    owners = {f"revoked:{r['id']}": (r["account_id"], r["iam_id"]) for r in rows}
    announced = set()
    for record in await read_topic(settings, settings.revocations_topic):
        body = json.loads(record.value)
        account, iam = owners[body["id"]]
        assert record.key == f"{account}/{iam}".encode()
        assert (body["data"]["account_id"], body["data"]["iam_id"]) == (account, iam)
        announced.add(body["id"])
    assert announced == set(owners)


@pytest.mark.timeout(150 + RECORDS // 20)
@pytest.mark.parametrize("seed", [BASE_SEED + run for run in range(RUNS)], ids="seed={}".format)
async def test_hostile_records_leave_the_worker_running_and_every_record_accounted_for(
    settings: Settings, db: Any, seed: int
) -> None:
    """A running worker fed valid events mixed with hostile records stays up and live, ends
    each record exactly once (applied, duplicate, ignored or dead-lettered with its original
    bytes and true provenance), and the valid events' effects equal the oracle's, every
    revocation announced."""
    print(f"hostile records: seed {seed}; reproduce: {SEED_ENV}={seed} {RUNS_ENV}=1 "
          f"{RECORDS_ENV}={RECORDS}")  # fmt: skip
    notices = await create_topic(settings, f"test-notices-{uuid.uuid4().hex[:12]}")
    # R6 off: the history is dated in the past and produced at once, so R6's guard (which
    # waits for what was produced before a key's cutoff) cannot hold a re-add's place, and the
    # oracle is R1-R4 (R6 has its own tests, in test_late_keys.py).
    settings = settings.model_copy(update={"revocations_topic": notices, "late_keys": "off"})
    rng = random.Random(seed)
    _, shots = mix(rng, RECORDS, settings.max_event_bytes, settings.max_future_skew_s)
    for key_bytes, value_bytes in BROKER_SIZED:
        shots.insert(rng.randrange(len(shots) + 1), broker_sized(key_bytes, value_bytes))
    facts = await _seed_keys(db, rng)
    port = free_port()
    worker = await spawn_worker(settings, CLEANUP_HTTP_PORT=str(port))
    assert worker.stderr is not None
    logs = asyncio.create_task(worker.stderr.read())  # drained, or the worker would block
    problems: list[str] = []
    try:

        async def ready() -> bool:
            assert worker.returncode is None, "the worker exited while starting"
            try:
                return (await http_get(port, "/readyz"))[0] == 200
            except OSError:
                return False

        await eventually(ready, timeout=60)
        watch = asyncio.create_task(_watch(worker, port, problems))
        produced = await produce(settings, shots, rng)
        sent = produced.sent
        # The group's committed offsets end at the end of each partition, past the
        # transaction markers and aborted records it never sees (docs/events.md).
        ends = {p: offset for p, offset in (await end_offsets(settings)).items() if offset}
        records = len(sent) + len(produced.aborted) + produced.markers
        assert sum(ends.values()) == records, "the topic holds records we did not send"

        async def all_committed() -> bool:
            committed = await committed_offsets(settings)
            return worker.returncode is not None or all(committed.get(p) == ends[p] for p in ends)

        await eventually(all_committed, timeout=60 + RECORDS / 20, interval=0.5)

        async def announced() -> bool:
            backlog = await outbox_notices(db)
            return worker.returncode is not None or backlog == 0

        await eventually(announced, timeout=60, interval=0.5)
        outcomes = await _events_total(port)
        watch.cancel()
        assert worker.returncode is None
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        await asyncio.wait_for(worker.wait(), settings.shutdown_grace_s + 5)
        stderr = (await logs).decode("utf-8", "replace")
        if worker.returncode != 0:
            print(f"worker exited with {worker.returncode}; its last logs:\n{stderr[-5000:]}")
    assert problems == [], problems[:5]
    assert worker.returncode == 0, stderr[-3000:]
    assert CANARY not in stderr, "a payload reached the logs"
    print(f"sent {len(sent)} of {len(shots)} records; outcomes {dict(outcomes)}; "
          f"kinds {sorted(Counter(s.kind for s in sent.values()).items())}")  # fmt: skip

    assert outcomes == _expected_outcomes(sent)
    assert sum(outcomes.values()) == len(sent)

    dead = {place: shot for place, shot in sent.items() if shot.expect in CLASSES}
    letters = await read_topic(settings, settings.dlq_topic)
    places = [_original_place(letter) for letter in letters]
    assert len(places) == len(set(places)), "a record was dead-lettered twice"
    assert set(places) == set(dead)
    dropped = [
        _check_dead_letter(lt, p, dead[p], settings) for lt, p in zip(letters, places, strict=True)
    ]
    print(f"{len(letters)} dead letters, {sum(dropped)} reduced to fit (too large)")

    await _check_dlq_commands(settings, dead)

    events: dict[tuple[str, str], MembershipEvent] = {}
    origins: dict[tuple[str, str], set[Place]] = {}
    for place, shot in sent.items():
        if shot.event is not None:
            identity = (shot.event.source, shot.event.id)
            events[identity] = shot.event
            origins.setdefault(identity, set()).add(place)
    ledger = await db.fetch(
        "SELECT source, event_id, kafka_partition, kafka_offset FROM membership_events"
    )
    assert {(r["source"], r["event_id"]) for r in ledger} == set(events)
    for r in ledger:
        assert (r["kafka_partition"], r["kafka_offset"]) in origins[(r["source"], r["event_id"])]

    expected_rows, expected_revoked = expected_state({}, facts, events.values())
    keys, rows = await database_state(db)
    assert {str(key_id) for key_id, revoked, _ in keys if revoked} == expected_revoked
    assert rows == expected_rows
    await _check_notices(settings, db)
