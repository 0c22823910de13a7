"""How the hostile-record test's records reach the broker: through producers that compress
with every codec or none, that write records aiokafka's send() refuses, that run transactions
and abort some, and one whose size limit leaves the refusing to the broker."""

from __future__ import annotations

import asyncio
import random
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from cleanup_worker.settings import Settings
from testkit.kafka import send_null_record
from tests.integration.hostile import Shot

# A dead letter carries the original record and repeats its key in a header; it is dropped
# to fit the producer's 1 MiB request limit (adapters/kafka/dead_letter_topic.py: first the
# value, then the key) only when that sum comes within ~48 KiB of it. Every smaller record
# must arrive whole.
FORWARDED_WHOLE_UP_TO = 1_000_000
# Producers may compress their batches: every codec Kafka has, and none.
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
# The share of records sent in transactions, of which about half are aborted.
TRANSACTIONAL = 0.05
Place = tuple[int, int]  # (partition, offset)


def fits_whole(shot: Shot) -> bool:
    """Whether the dead letter of this record must carry it whole."""
    return shot.size + len(shot.key or b"") <= FORWARDED_WHOLE_UP_TO


@dataclass
class Produced:
    """What the broker acknowledged, and what a read_committed consumer must never see."""

    sent: dict[Place, Shot] = field(default_factory=dict)  # visible records, by place
    aborted: dict[Place, Shot] = field(default_factory=dict)
    markers: int = 0  # transaction markers: offsets that hold no record
    refused: list[str] = field(default_factory=list)


async def _transactions(
    client: AIOKafkaProducer, topic: str, shots: list[tuple[Shot, int]], rng: random.Random
) -> Produced:
    """Groups of one to five records in a transaction each, about half of them aborted."""
    done = Produced()
    while shots:
        size = rng.randint(1, 5)
        group, shots = shots[:size], shots[size:]
        commit = rng.random() < 0.5
        await client.begin_transaction()
        places = []
        for shot, partition in group:
            meta = await client.send_and_wait(
                topic, shot.value, shot.key, partition, headers=shot.headers
            )
            places.append(((meta.partition, meta.offset), shot))
        await (client.commit_transaction() if commit else client.abort_transaction())
        (done.sent if commit else done.aborted).update(places)
        done.markers += len({partition for _, partition in group})
    return done


async def produce(settings: Settings, shots: list[Shot], rng: random.Random) -> Produced:
    """Sends every shot to a random partition, by a randomly chosen producer."""
    topic = settings.kafka_topics[0]
    common: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap_servers, "acks": "all"}
    producers = [
        AIOKafkaProducer(**common, enable_idempotence=True, compression_type=codec)
        for codec in CODECS
    ]
    # Records near the broker's limit go alone through a producer whose own limit is higher,
    # so that the broker, not the client, decides; a refusal there fails only that record.
    large = AIOKafkaProducer(**common, max_request_size=4 * 1024 * 1024)
    transactional = AIOKafkaProducer(**common, transactional_id=f"hostile-{uuid.uuid4().hex}")
    done = Produced()
    plain: list[tuple[Shot, int, AIOKafkaProducer]] = []
    in_transactions: list[tuple[Shot, int]] = []
    for shot in shots:
        partition = rng.randrange(3)
        if not fits_whole(shot):
            plain.append((shot, partition, large))
        elif shot.value is not None and rng.random() < TRANSACTIONAL:
            in_transactions.append((shot, partition))
        else:
            plain.append((shot, partition, rng.choice(producers)))

    async def one(shot: Shot, partition: int, client: AIOKafkaProducer) -> None:
        try:
            if shot.key is None and shot.value is None:
                meta = await send_null_record(large, topic, partition, shot.headers)
            else:
                meta = await client.send_and_wait(
                    topic, shot.value, shot.key, partition, headers=shot.headers
                )
        except KafkaError as exc:
            done.refused.append(f"{shot.kind} ({type(exc).__name__})")
            return
        done.sent[(meta.partition, meta.offset)] = shot

    async with AsyncExitStack() as stack:
        for client in [*producers, large, transactional]:
            await client.start()
            stack.push_async_callback(client.stop)
        _, committed = await asyncio.gather(
            asyncio.gather(*(one(*item) for item in plain)),
            _transactions(transactional, topic, in_transactions, rng),
        )
    done.sent.update(committed.sent)
    done.aborted, done.markers = committed.aborted, committed.markers
    print(
        f"the broker refused {len(done.refused)}: {', '.join(done.refused)}; "
        f"{len(in_transactions)} in transactions, {len(done.aborted)} of them aborted"
    )
    return done
