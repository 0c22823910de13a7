"""What an operator sees when the secured broker refuses the worker: one line per retry that
names the cause, readiness false, backoff, no crash loop, nothing committed that was not
applied; and once the cause is fixed (an ACL granted), the worker proceeds without a restart."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from cleanup_worker.settings import Settings
from testkit.database import ledger_size, seed_key
from testkit.events import at, event
from testkit.kafka import committed_offsets, end_offsets, publisher
from testkit.metrics import scrape
from testkit.processes import free_port, spawn_worker
from testkit.waiting import eventually
from tests.integration.secure.conftest import (
    NOGRANT,
    SECURE,
    WORKER,
    SecureServices,
    kafka_acls_async,
    over_mtls,
    over_scram,
)
from tests.integration.secure.test_secure_worker import ready

Case = Callable[[SecureServices, Settings], Settings]


def wrong_password(secure: SecureServices, settings: Settings) -> Settings:
    return over_scram(secure, settings).model_copy(
        update={"kafka_sasl_password": SecretStr("not-the-password")}
    )


def untrusted_ca(secure: SecureServices, settings: Settings) -> Settings:
    return over_scram(secure, settings).model_copy(
        update={"kafka_ssl_cafile": SECURE / "rogue-ca.pem"}
    )


def other_host_name(secure: SecureServices, settings: Settings) -> Settings:
    return over_mtls(secure, settings).model_copy(
        update={"kafka_bootstrap_servers": secure.sasl["CLEANUP_DEV_KAFKA_WRONGHOST_SERVERS"]}
    )


def untrusted_client_certificate(secure: SecureServices, settings: Settings) -> Settings:
    return over_mtls(secure, settings).model_copy(
        update={
            "kafka_ssl_certfile": SECURE / "rogue-client.pem",
            "kafka_ssl_keyfile": SECURE / "rogue-client.key",
            "kafka_ssl_key_password": None,
        }
    )


CASES: dict[str, tuple[Case, str]] = {
    "wrong SCRAM password": (wrong_password, "SASL authentication failed"),
    "untrusted CA": (untrusted_ca, "not signed by CLEANUP_KAFKA_SSL_CAFILE"),
    "certificate for another host": (other_host_name, "for another host name"),
    "untrusted client certificate": (
        untrusted_client_certificate,
        "does not accept the client certificate",
    ),
}


def parse_log(stderr: bytes) -> list[dict[str, Any]]:
    """Every line the worker wrote; each one must be a JSON log line (no library noise)."""
    lines = []
    for raw in stderr.decode().splitlines():
        try:
            lines.append(json.loads(raw))
        except json.JSONDecodeError:
            pytest.fail(f"not a log line of ours: {raw[:300]}")
    return lines


def retries(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == "retry.scheduled"]


async def until_retried(port: int, times: int) -> None:
    """Waits until the worker on `port` has counted `times` retries (its /metrics answers
    once it has started)."""

    async def retried() -> bool:
        try:
            return (await scrape(port)).total("cleanup_retries_total") >= times
        except OSError:
            return False

    await eventually(retried, timeout=60, interval=0.2)


async def stop(worker: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    worker.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(worker.communicate(), timeout=30)
    assert worker.returncode == 0, stderr.decode()[-3000:]
    return parse_log(stderr)


def assert_no_secret(secure: SecureServices, lines: list[dict[str, Any]]) -> None:
    text = json.dumps(lines)
    assert not [secret for secret in secure.secrets() if secret in text], "a secret is logged"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
async def test_refused_connection_is_named_and_retried(
    case: str, secure: SecureServices, settings: Settings, db: Any
) -> None:
    """Each refusal gives one line a retry naming its cause, readiness stays false, the
    waits grow, the process keeps running, and no offset is committed."""
    make, cause = CASES[case]
    key = await seed_key(db, "acct", "hal", at(0))
    async with publisher(settings) as pub:
        await pub.events([event("removed", "acct", "hal", at(10))])
    port = free_port()
    worker = await spawn_worker(
        make(secure, settings),
        CLEANUP_HTTP_PORT=str(port),
        CLEANUP_LOG_LEVEL="debug",
        CLEANUP_RETRY_MAX_WAIT_S="3",
    )
    started = time.monotonic()
    try:
        await until_retried(port, 3)
        assert worker.returncode is None, "the worker exited instead of retrying"
        assert not await ready(port)
    finally:
        lines = await stop(worker)
    elapsed = time.monotonic() - started
    scheduled = retries(lines)
    # Backed off: a handful of attempts over those seconds, not a tight loop.
    assert 3 <= len(scheduled) <= 3 + 2 * elapsed, (elapsed, scheduled)
    assert all(cause in line["cause"] for line in scheduled), scheduled[-1]
    assert await committed_offsets(settings) == {}
    assert await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", key) is None
    assert_no_secret(secure, lines)


@pytest.mark.timeout(120)
async def test_missing_dlq_acl_is_named_and_granting_it_resumes_the_worker(
    secure: SecureServices, settings: Settings, db: Any
) -> None:
    """Without WRITE on the dead-letter topic the batch is held (readiness false, nothing
    committed, the topic named); once the ACL is granted the same process goes on."""
    dlq = f"{NOGRANT}dlq-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=secure.plain_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(dlq, 1, 1)])
    finally:
        await admin.close()
    plain = settings.model_copy(update={"dlq_topic": dlq})
    key = await seed_key(db, "acct", "ivy", at(0))
    async with publisher(plain) as pub:
        await pub.raw(b"{not json", key=b"acct/garbage", partition=0)
        await pub.events([event("removed", "acct", "ivy", at(10))], partition=0)
    port = free_port()
    worker = await spawn_worker(over_scram(secure, plain), CLEANUP_HTTP_PORT=str(port))
    try:
        await until_retried(port, 2)  # the dead letter was refused, twice
        assert not await ready(port)
        assert await committed_offsets(plain) == {}
        grant = ("--operation", "Write", "--operation", "Describe", "--topic", dlq)
        await kafka_acls_async(secure.plain_bootstrap, "--add", "--allow-principal", WORKER, *grant)

        async def proceeded() -> bool:
            return await end_offsets(plain, dlq) == {0: 1} and await ledger_size(db) == 1

        await eventually(proceeded, timeout=60)
        await eventually(lambda: ready(port), timeout=30)

        async def committed_past_both() -> bool:
            return (await committed_offsets(plain)).get(0) == 2

        await eventually(committed_past_both, timeout=30)
    finally:
        lines = await stop(worker)
    assert await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", key) is not None
    scheduled = retries(lines)
    assert scheduled
    assert all(f"not authorized on topic {dlq}" in line["cause"] for line in scheduled)
    assert_no_secret(secure, lines)


@pytest.mark.timeout(120)
async def test_missing_group_acl_is_named_and_granting_it_lets_the_worker_join(
    secure: SecureServices, settings: Settings, db: Any
) -> None:
    """Without READ on its group the worker keeps retrying the join (one named line each, no
    crash); once the ACL is granted the same process joins and applies the removal."""
    group = f"{NOGRANT}group-{uuid.uuid4().hex[:12]}"
    plain = settings.model_copy(update={"kafka_group_id": group})
    key = await seed_key(db, "acct", "jo", at(0))
    async with publisher(plain) as pub:
        await pub.events([event("removed", "acct", "jo", at(10))])
    port = free_port()
    worker = await spawn_worker(over_mtls(secure, plain), CLEANUP_HTTP_PORT=str(port))
    try:
        await until_retried(port, 2)  # the join was refused, twice
        assert worker.returncode is None, "the worker exited instead of retrying"
        assert not await ready(port)
        grant = ("--operation", "Read", "--group", group)
        await kafka_acls_async(secure.plain_bootstrap, "--add", "--allow-principal", WORKER, *grant)

        async def applied() -> bool:
            return await ledger_size(db) == 1

        await eventually(applied, timeout=60)
        await eventually(lambda: ready(port), timeout=30)
    finally:
        lines = await stop(worker)
    assert await db.fetchval("SELECT revoked_at FROM api_keys WHERE id = $1", key) is not None
    scheduled = retries(lines)
    assert scheduled
    assert all(f"not authorized on consumer group {group}" in line["cause"] for line in scheduled)
    assert_no_secret(secure, lines)
