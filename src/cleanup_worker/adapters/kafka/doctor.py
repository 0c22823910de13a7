"""`cleanup-worker doctor`'s broker checks, with the configured security, writing nothing.

What a client can learn without producing: the cluster and each topic's metadata (DESCRIBE),
whether it may fetch from the input topics (a fetch at the end offset reads no record but is
authorised as READ), whether it may describe the consumer group (its committed offsets,
without joining: joining would rebalance the live group), and whether it may open an idempotent
producer (InitProducerId). Whether it may WRITE to a topic the broker only says to a
producer that writes; aiokafka's metadata request predates the version that reports a
topic's authorised operations, so those rows say how to check by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorNotAvailableError, KafkaError

from cleanup_worker.adapters.kafka import clients as kafka
from cleanup_worker.adapters.kafka.errors import describe
from cleanup_worker.domain.checks import Check, Outcome
from cleanup_worker.retries import retrying
from cleanup_worker.settings import Settings

KAFKA = "kafka"
TIMEOUT_S = 20.0
_ERRORS = {3: "missing", 29: "not authorised to describe it"}


def _why(exc: BaseException) -> str:
    return describe(exc) or f"{type(exc).__name__}: {exc}"[:200]


async def _cluster(admin: AIOKafkaAdminClient, settings: Settings) -> Check:
    where = f"{settings.kafka_security_protocol} at {settings.kafka_bootstrap_servers}"
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as exc:
        return Check.failed(
            KAFKA,
            "broker",
            f"{where}: {_why(exc) if not isinstance(exc, TimeoutError) else 'no answer'}",
            "check CLEANUP_KAFKA_BOOTSTRAP_SERVERS and the security settings (docs/security.md)",
        )
    return Check.passed(KAFKA, "broker", f"{where}: {len(cluster['brokers'])} broker(s)")


async def _topics(admin: AIOKafkaAdminClient, settings: Settings) -> tuple[list[Check], set[str]]:
    roles = {t: "input" for t in settings.kafka_topics} | {settings.dlq_topic: "dead letters"}
    if settings.revocations_topic:
        roles[settings.revocations_topic] = "notices"
    checks, present = [], set()
    described = {t["topic"]: t for t in await admin.describe_topics(list(roles))}
    for topic, role in roles.items():
        found = described.get(topic)
        code = found["error_code"] if found else 3
        label = f"topic {topic} ({role})"
        if found and code == 0:
            present.add(topic)
            checks.append(Check.passed(KAFKA, label, f"{len(found['partitions'])} partition(s)"))
        else:
            checks.append(
                Check.failed(
                    KAFKA,
                    label,
                    _ERRORS.get(code, f"error code {code}"),
                    "create it (docs/operations.md) or grant DESCRIBE on it",
                )
            )
    return checks, present


async def _can_read(settings: Settings, topic: str) -> Check:
    label = f"read {topic}"
    reader = kafka.standalone_consumer(settings, auto_offset_reset="latest")
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await reader.start()
            partitions = [TopicPartition(topic, p) for p in await _partitions(reader, topic)]
            reader.assign(partitions)
            for partition in partitions:
                await reader.seek_to_end(partition)  # type: ignore[attr-defined]
            await reader.getmany(timeout_ms=500)
    except (KafkaError, OSError, TimeoutError) as exc:
        return Check.failed(
            KAFKA, label, _why(exc), "grant READ on the topic to the worker's principal"
        )
    finally:
        await reader.stop()
    return Check.passed(KAFKA, label, "a fetch is allowed")


async def _partitions(reader: Any, topic: str) -> list[int]:
    found = reader.partitions_for_topic(topic) or set()
    return sorted(found)


async def _group(admin: AIOKafkaAdminClient, group: str) -> Check:
    """DESCRIBE on the group, by asking its committed offsets (OffsetFetch): a principal with
    no ACL on the group fails here. READ itself a broker tells only a member that joins, and
    joining would rebalance the live group; DescribeGroups v3 would report it, but aiokafka
    0.14 parses that answer with the v2 layout and drops the field."""
    label = f"consumer group {group}"
    try:
        # A fresh broker creates its offsets topic on the first coordinator lookup.
        async for attempt in retrying(
            "doctor.group_offsets", on=CoordinatorNotAvailableError, wait_max=1, timeout=TIMEOUT_S
        ):
            with attempt:
                committed = await admin.list_consumer_group_offsets(group)
    except (KafkaError, OSError, TimeoutError) as exc:
        return Check.failed(KAFKA, label, _why(exc), f"grant READ on the group {group}")
    return Check.passed(
        KAFKA,
        label,
        f"DESCRIBE allowed, {len(committed)} partition(s) committed (READ, which implies it, "
        "is only shown to a member that joins: `kafka-acls --list --group`)",
    )


async def _producer(settings: Settings, present: set[str]) -> list[Check]:
    producer = kafka.producer(settings)
    checks = []
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await producer.start()
        checks.append(Check.passed(KAFKA, "idempotent producer", "InitProducerId allowed"))
    except (KafkaError, OSError, TimeoutError) as exc:
        checks.append(
            Check.failed(
                KAFKA,
                "idempotent producer",
                _why(exc),
                "grant IDEMPOTENT_WRITE on the cluster (or WRITE on the topics)",
            )
        )
    finally:
        await producer.stop()
    for topic in sorted({settings.dlq_topic, settings.revocations_topic or ""} & present):
        checks.append(
            Check(
                KAFKA,
                f"write {topic}",
                Outcome.UNKNOWN,
                "the broker only tells a producer that writes; not checked",
                f"kafka-acls --list --topic {topic} (WRITE for the worker's principal)",
            )
        )
    return checks


async def kafka_checks(settings: Settings) -> list[Check]:
    admin = AIOKafkaAdminClient(**kafka.client_options(settings), request_timeout_ms=15_000)
    try:
        cluster = await _cluster(admin, settings)
        if cluster.outcome is Outcome.FAIL:
            return [cluster]
        topics, present = await _topics(admin, settings)
        reads = [await _can_read(settings, t) for t in settings.kafka_topics if t in present]
        group = await _group(admin, settings.kafka_group_id)
        return [cluster, *topics, *reads, group, *await _producer(settings, present)]
    finally:
        await admin.close()
