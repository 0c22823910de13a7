"""Many keyed records to one topic as whole producer batches: one batch per partition filled
at once, instead of one `send` per record.

aiokafka's `send` costs tens of µs of Python per record (a murmur2 hash in pure Python, a
future per record, the accumulator's bookkeeping); a revocation notice is five records per
removal, so at full speed that was most of the relay's cost. Here each distinct key is hashed
once, each record is appended to a batch builder (C code), and a batch has one future.

Records go to the partition the producer's own partitioner would choose (murmur2 of the key, as
Java's clients do), so a key's records stay on one partition whichever way they were sent.
Idempotence holds: the producer gives every batch its producer id and sequence when it drains it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from itertools import zip_longest
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from cleanup_worker.adapters.kafka.clients import BatchBuilder, Header, Producer

_partitioner = DefaultPartitioner()


def _batches(
    producer: Producer, records: Sequence[tuple[bytes, bytes]], headers: Sequence[Header]
) -> list[BatchBuilder]:
    """The records in batch builders, each filled up to the producer's batch size."""
    filled = [producer.create_batch()]
    for key, value in records:
        if filled[-1].append(key=key, value=value, timestamp=None, headers=headers) is None:
            # Full (and now closed): a new builder takes any one record, whatever its size.
            filled.append(producer.create_batch())
            filled[-1].append(key=key, value=value, timestamp=None, headers=headers)
    return filled


async def send_keyed(
    producer: Producer,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    headers: Sequence[Header] = (),
) -> list[asyncio.Future[Any]]:
    """Queues `(key, value)` records, each with `headers`; the futures resolve once the broker
    acknowledged their batches (and raise if it did not)."""
    partitions = sorted(await producer.partitions_for(topic))
    partition_of: dict[bytes, int] = {}
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        partition = partition_of.get(key)
        if partition is None:
            partition = partition_of[key] = _partitioner(key, partitions, partitions)
        by_partition.setdefault(partition, []).append((key, value))
    queued: list[asyncio.Future[Any]] = []
    # In waves: one batch of every partition, then the next. A partition takes a second batch
    # only once its first left for the broker, so a wave fills one produce request instead of
    # each batch waiting for its own.
    waves = zip_longest(
        *[[(p, b) for b in _batches(producer, rs, headers)] for p, rs in by_partition.items()]
    )
    for wave in waves:
        for queued_batch in wave:
            if queued_batch is not None:
                partition, batch = queued_batch
                batch.close()
                queued.append(await producer.send_batch(batch, topic, partition=partition))
    return queued
