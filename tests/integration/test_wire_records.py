"""Records built byte by byte, not through any client's API, through the real broker into a
running `cleanup-worker run` process: header names and values of arbitrary bytes (names that
are not UTF-8 among them), null, empty and arbitrary keys and values, thousands of headers,
duplicate names, timestamp -1, a topic stamped with LogAppendTime, and transactions committed
and aborted, interleaved with valid removals across partitions and topics.

Every valid removal is applied, every other record is accounted for (dead-lettered with its
class, or never seen: aborted), the worker stays up and live throughout, and the group ends at
the end of every partition with no lag. Seeded like test_hostile_records.py (same variables:
`CLEANUP_FUZZ_SEED`, `CLEANUP_FUZZ_RECORDS`, `CLEANUP_FUZZ_RUNS`; `make fuzz` runs both).
"""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.settings import Settings
from testkit.database import revoked_keys, seed_key
from testkit.events import at, binary, event
from testkit.kafka import committed_offsets, end_offsets, read_topic
from testkit.metrics import scrape
from testkit.processes import free_port, http_get, spawn_worker
from testkit.waiting import eventually
from testkit.wire import RawHeader, RawRecord, batch, produce_raw
from tests.integration.test_hostile_records import BASE_SEED, RECORDS, RUNS, SEED_ENV, _watch

# Byte strings that are not UTF-8: a lone continuation, an overlong NUL, a surrogate, a cut
# sequence, bytes that never occur.
NOT_UTF8 = [b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xff\xfe", b"\xf8\x88\x80\x80"]


Place = tuple[str, int, int]  # topic, partition, offset


@dataclass
class Shot:
    record: RawRecord
    expect: str  # "applied", a dead letter's error class, or "aborted"
    user: str | None = None  # the member a valid removal removes


def _text(rng: random.Random, size: int) -> bytes:
    alphabet = "aZ09-_.\x00\x01\x7f é€😀\u2028"
    return "".join(rng.choice(alphabet) for _ in range(size)).encode()


def _noise(rng: random.Random, count: int) -> list[RawHeader]:
    """Headers the binding never reads: UTF-8 names (NUL and emoji included), any values,
    names repeated."""
    names = [b"x-" + _text(rng, rng.randrange(0, 12)) for _ in range(max(1, count // 3))]
    values = [None, b"", rng.randbytes(rng.randrange(0, 64))]
    return [(rng.choice(names), rng.choice(values)) for _ in range(count)]


def _removal(rng: random.Random, n: int, *, bad_name: bool = False) -> Shot:
    user = f"w{n}"
    value, headers = binary(event("removed", "acct", user, at(10)))
    own: list[RawHeader] = [(name.encode(), data) for name, data in headers]
    extra = _noise(rng, rng.choice([0, 1, 5, 2000 if rng.random() < 0.05 else 3]))
    if bad_name:
        extra.insert(rng.randrange(len(extra) + 1), (rng.choice(NOT_UTF8) + _text(rng, 3), b"v"))
    mixed = own + extra
    rng.shuffle(mixed)
    key = rng.choice([None, b"", f"acct/{user}".encode(), rng.randbytes(20)])
    stamp = -1 if rng.random() < 0.1 else None
    record = RawRecord(key, value, mixed, timestamp_ms=stamp)
    return Shot(record, dlq.UNREADABLE if bad_name else "applied", None if bad_name else user)


def _junk(rng: random.Random) -> Shot:
    """Not an event: dead-lettered as malformed (the value decides; headers are noise)."""
    value = rng.choice([None, b"", b"\x00" + rng.randbytes(rng.randrange(0, 200))])
    key = rng.choice([None, b"", rng.randbytes(rng.randrange(1, 40))])
    record = RawRecord(key, value, _noise(rng, rng.randrange(0, 6)))
    if rng.random() < 0.3:  # also a name that is not UTF-8: the client cannot read it at all
        headers = [*record.headers, (rng.choice(NOT_UTF8), None)]
        return Shot(RawRecord(key, value, headers), dlq.UNREADABLE)
    return Shot(record, "MalformedEvent")


async def _create_log_append_topic(settings: Settings) -> str:
    name = f"test-lat-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.require_kafka())
    await admin.start()
    try:
        config = {"message.timestamp.type": "LogAppendTime"}
        await admin.create_topics([NewTopic(name, 2, 1, topic_configs=config)])
    finally:
        await admin.close()
    return name


async def _transaction(
    settings: Settings, topic: str, shots: list[Shot], *, commit: bool, partition: int
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.require_kafka(), transactional_id=f"w-{uuid.uuid4().hex}"
    )
    await producer.start()
    try:
        await producer.begin_transaction()
        for shot in shots:
            r = shot.record
            headers = [(name.decode(), value) for name, value in r.headers]
            await (await producer.send(topic, r.value, key=r.key, headers=headers,
                                       partition=partition))  # fmt: skip
        await (producer.commit_transaction() if commit else producer.abort_transaction())
    finally:
        await producer.stop()


async def _produce(
    settings: Settings, topics: list[str], rng: random.Random, count: int
) -> tuple[dict[Place, Shot], list[Shot]]:
    """Sends `count` records as raw batches and transactions; returns what each place holds."""
    placed: dict[Place, Shot] = {}
    aborted: list[Shot] = []
    n = 0
    while n < count:
        topic = rng.choice(topics)
        partition = rng.randrange(3 if topic == topics[0] else 2)
        if rng.random() < 0.15:  # a transaction of valid removals (aiokafka's own encoding)
            shots = [_removal(rng, n + i) for i in range(rng.randrange(1, 4))]
            for shot in shots:
                shot.record = RawRecord(shot.record.key, shot.record.value, [
                    (k, v) for k, v in shot.record.headers if not k.startswith(b"x-")])  # fmt: skip
            commit = rng.random() < 0.5
            await _transaction(settings, topic, shots, commit=commit, partition=partition)
            if commit:
                start = (await end_offsets(settings, topic))[partition] - len(shots) - 1
                placed.update({(topic, partition, start + i): s for i, s in enumerate(shots)})
            else:
                aborted += [Shot(s.record, "aborted", s.user) for s in shots]
            n += len(shots)
            continue
        shots = []
        for _ in range(rng.randrange(1, 6)):
            roll = rng.random()
            shots.append(_removal(rng, n, bad_name=roll < 0.2) if roll < 0.7 else _junk(rng))
            n += 1
        # timestamp -1 only as a whole batch (first and max timestamp -1 as well)
        if any(s.record.timestamp_ms == -1 for s in shots):
            shots = [Shot(RawRecord(s.record.key, s.record.value, s.record.headers, -1),
                          s.expect, s.user) for s in shots]  # fmt: skip
        base = await produce_raw(settings, topic, partition, batch([s.record for s in shots]))
        placed.update({(topic, partition, base + i): s for i, s in enumerate(shots)})
    return placed, aborted


@pytest.mark.timeout(240 + RECORDS // 10)
@pytest.mark.parametrize("seed", [BASE_SEED + run for run in range(RUNS)], ids="seed={}".format)
async def test_records_built_byte_by_byte_never_stop_the_worker(
    settings: Settings, db: Any, seed: int
) -> None:
    count = max(60, RECORDS // 10)
    print(f"wire records: seed {seed}; reproduce: {SEED_ENV}={seed} CLEANUP_FUZZ_RUNS=1 "
          f"CLEANUP_FUZZ_RECORDS={RECORDS} ({count} records)")  # fmt: skip
    rng = random.Random(seed)
    lat = await _create_log_append_topic(settings)
    topics = [settings.kafka_topics[0], lat]
    settings = settings.model_copy(update={"kafka_topics": topics, "late_keys": "off"})
    keys = {f"w{n}": await seed_key(db, "acct", f"w{n}", at(0)) for n in range(count + 10)}
    port = free_port()
    worker = await spawn_worker(settings, CLEANUP_HTTP_PORT=str(port))
    assert worker.stderr is not None
    logs = asyncio.create_task(worker.stderr.read())
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
        placed, aborted = await _produce(settings, topics, rng, count)
        ends = {t: {p: o for p, o in (await end_offsets(settings, t)).items() if o} for t in topics}

        async def consumed() -> bool:
            if worker.returncode is not None:
                return True
            committed = await _committed(settings, topics)
            return committed == ends

        await eventually(consumed, timeout=120, interval=0.5)

        async def no_lag() -> bool:
            return (await scrape(port)).total("cleanup_consumer_lag") == 0

        await eventually(no_lag)
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
    assert worker.returncode == 0

    applied = {s.user for s in placed.values() if s.expect == "applied" and s.user}
    revoked = await revoked_keys(db)
    assert {keys[u] for u in applied} == set(revoked)
    assert not {keys[s.user] for s in aborted if s.user} & set(revoked)
    dead = {place: s.expect for place, s in placed.items() if s.expect != "applied"}
    letters = {}
    for letter in await read_topic(settings, settings.dlq_topic):
        text = dlq.decode_provenance(dict(letter.headers))
        place = (text[dlq.H_TOPIC], int(text[dlq.H_PARTITION]), int(text[dlq.H_OFFSET]))
        assert place not in letters, "dead-lettered twice"
        letters[place] = text[dlq.H_ERROR_CLASS]
        if text[dlq.H_ERROR_CLASS] == dlq.UNREADABLE:
            shot = placed[place]
            assert letter.value == shot.record.value
            assert any(n.startswith(dlq.H_HEADER_HEX) for n, _ in letter.headers)
    assert letters == dead
    print(f"{len(placed)} records placed, {len(applied)} applied, {len(aborted)} aborted, "
          f"dead letters {sorted(Counter(letters.values()).items())}")  # fmt: skip


async def _committed(settings: Settings, topics: list[str]) -> dict[str, dict[int, int]]:
    result: dict[str, dict[int, int]] = {}
    for topic in topics:
        one = settings.model_copy(update={"kafka_topics": [topic]})
        result[topic] = {p: o for p, o in (await committed_offsets(one)).items() if o}
    return result
