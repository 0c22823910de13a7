"""`cleanup-worker run` through the secured broker (SASL_SSL/SCRAM, mutual TLS) and database
(the least-privilege login over verify-full TLS), as a real process."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import committed_offsets, end_offsets, publisher, read_topic
from testkit.processes import free_port, spawn_worker
from testkit.waiting import eventually
from tests.integration.secure.conftest import TRANSPORTS, SecureServices


async def ready(port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/readyz", timeout=aiohttp.ClientTimeout(2)) as r,
        ):
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def worker_sessions(db: Any) -> list[tuple[str, bool]]:
    """The worker's database sessions: as whom, and whether over TLS."""
    rows = await db.fetch(
        "SELECT a.usename, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
        "WHERE a.application_name = 'cleanup-worker' AND a.datname = current_database()"
    )
    return [(row["usename"], row["ssl"]) for row in rows]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_the_story_through_the_secured_services(
    transport: str, secure: SecureServices, settings: Settings, db: Any
) -> None:
    """Removal, re-add, duplicate and a malformed record (dead-lettered with provenance), then
    SIGTERM: all applied and committed, as the least-privilege login over TLS, no secret logged."""
    secured = TRANSPORTS[transport](secure, settings)
    bob_old = await seed_key(db, "acct", "bob", at(0))
    alice = [await seed_key(db, "acct", "alice", at(0)) for _ in range(2)]
    carol = await seed_key(db, "acct", "carol", at(0))
    removal = event("removed", "acct", "alice", at(10))
    port = free_port()
    worker = await spawn_worker(secured, CLEANUP_HTTP_PORT=str(port), CLEANUP_LOG_LEVEL="debug")
    try:
        async with publisher(settings) as pub:
            await pub.events([removal, removal])  # the second is a duplicate
            await pub.events([event("removed", "acct", "bob", at(10))])
            await pub.events([event("added", "acct", "bob", at(20))])
            await pub.raw(b"{not json", key=b"acct/garbage", partition=0)

            async def applied() -> bool:
                return await ledger_size(db) == 3 and await end_offsets(
                    settings, settings.dlq_topic
                ) == {0: 1}

            await eventually(applied, timeout=90)
            bob_new = await seed_key(db, "acct", "bob", at(25))
            await eventually(lambda: ready(port), timeout=30)
        assert set(await worker_sessions(db)) == {("cleanup_app", True)}
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(worker.communicate(), timeout=30)
    log = stderr.decode()
    assert worker.returncode == 0, log[-3000:]
    revoked = await revoked_keys(db)
    assert set(revoked) == {*alice, bob_old}
    assert revoked[alice[0]] == ("member_removed", removal.ref)
    assert carol not in revoked
    assert bob_new not in revoked
    ends = {partition: end for partition, end in (await end_offsets(settings)).items() if end}
    assert await committed_offsets(settings) == ends
    [letter] = await read_topic(settings, settings.dlq_topic)
    provenance = dlq.decode_provenance(dict(letter.headers))
    assert provenance[dlq.H_TOPIC] == settings.kafka_topics[0]
    assert provenance[dlq.H_GROUP] == settings.kafka_group_id
    assert (provenance[dlq.H_PARTITION], provenance[dlq.H_KEY]) == ("0", "acct/garbage")
    assert letter.value == b"{not json"
    assert "worker.stopped" in log
    leaked = [secret for secret in secure.secrets() if secret in log]
    assert not leaked, "a secret is in the worker's log"
    assert secured.database_url.get_secret_value() not in log
