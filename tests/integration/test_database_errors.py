"""Database errors through the real worker: a statement timeout isolates the costly event, and
a transient error is retried, logged once and counted once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from typing import Any

import asyncpg

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.adapters.postgres.connections import (
    BATCH_PLANNER,
    SESSION_LIMITS,
    connect,
    create_pool,
)
from cleanup_worker.adapters.postgres.sqlstate import is_transient, is_unreachable
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import committed_offsets, end_offsets, publisher, read_topic
from testkit.metrics import sample, scrape
from testkit.processes import free_port, running_worker, spawn_worker
from testkit.waiting import eventually

# Revoking a key of the member "slow" takes a second: longer than the statement timeout.
_SLOW_MEMBER = """
CREATE FUNCTION slow_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;
CREATE TRIGGER slow_revocation BEFORE UPDATE ON api_keys
FOR EACH ROW WHEN (OLD.iam_id = 'slow') EXECUTE FUNCTION slow_revocation();
"""


async def test_statement_timeout_isolates_the_costly_event(settings: Settings, db: Any) -> None:
    """A removal whose statement times out (57014) is dead-lettered on its own; the rest of
    its batch is applied and every offset is committed."""
    await db.execute(_SLOW_MEMBER)
    fast = [await seed_key(db, "acct", user, at(0)) for user in ("alice", "bob")]
    slow = await seed_key(db, "acct", "slow", at(0))
    removals = [event("removed", "acct", user, at(5)) for user in ("alice", "slow", "bob")]
    timed = settings.model_copy(update={"database_statement_timeout_ms": 300})
    isolated_before = sample("cleanup_isolated_failures_total")
    async with publisher(timed) as pub:
        await pub.events(removals, partition=0)  # one partition: one batch
        async with running_worker(timed):

            async def settled() -> bool:
                return (await committed_offsets(timed)).get(0) == (await end_offsets(timed))[0]

            await eventually(settled)
    assert set(await revoked_keys(db)) == set(fast)
    assert slow not in await revoked_keys(db)
    assert await ledger_size(db) == 2
    [letter] = await read_topic(timed, timed.dlq_topic)
    provenance = dlq.decode_provenance(dict(letter.headers))
    assert provenance[dlq.H_ERROR_CLASS] == "QueryCanceledError"
    assert "SQLSTATE 57014" in provenance[dlq.H_ERROR_MESSAGE]
    assert json.loads(letter.value or b"{}")["data"]["iam_id"] == "slow"
    assert sample("cleanup_isolated_failures_total") - isolated_before == 1


async def test_transient_error_is_logged_once_and_counted_once(settings: Settings, db: Any) -> None:
    """A batch that waits past its lock timeout (55P03) is retried, not dead-lettered: each
    retry is one log line naming the module, the operation and the error class, and one
    cleanup_retries_total."""
    key = await seed_key(db, "acct", "alice", at(0))
    await db.execute("INSERT INTO member_locks (account_id, iam_id) VALUES ('acct', 'alice')")
    port = free_port()
    holder = db  # this test's connection holds alice's member lock while the worker tries
    transaction = holder.transaction()
    await transaction.start()
    await holder.execute(
        "SELECT 1 FROM member_locks WHERE account_id = 'acct' AND iam_id = 'alice' FOR UPDATE"
    )
    worker = await spawn_worker(
        settings, CLEANUP_HTTP_PORT=str(port), CLEANUP_DATABASE_STATEMENT_TIMEOUT_MS="1000"
    )
    labels = {"operation": "database.batch", "error": "LockNotAvailableError"}
    try:
        async with publisher(settings) as pub:
            await pub.events([event("removed", "acct", "alice", at(5))])

        async def retried() -> bool:
            try:
                return (await scrape(port)).value("cleanup_retries_total", labels) >= 2
            except OSError:  # not listening yet
                return False

        await eventually(retried, timeout=60)
        await transaction.rollback()

        async def revoked() -> bool:
            return key in await revoked_keys(db)

        await eventually(revoked)
        counted = (await scrape(port)).value("cleanup_retries_total", labels)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.stderr is not None
        stderr = (await asyncio.wait_for(worker.stderr.read(), 30)).decode()
        await asyncio.wait_for(worker.wait(), 30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    mentions = [line for line in lines if "LockNotAvailableError" in json.dumps(line)]
    assert mentions, stderr
    assert len(mentions) == counted
    for line in mentions:
        assert line["event"] == "retry.scheduled"
        assert line["module"] == "cleanup_worker.retries"
        assert line["operation"] == "database.batch"
        assert line["error"] == "LockNotAvailableError"
    assert not [line for line in lines if str(line.get("event", "")).startswith("stamina")]
    assert all("module" in line for line in lines)
    assert not await read_topic(settings, settings.dlq_topic)


async def test_sessions_carry_limits_for_clients_that_vanish(settings: Settings) -> None:
    """Every pool session tells the server to end it when it idles inside a transaction, and
    to probe and time out a silent peer, so that a vanished worker's locks are let go."""
    pool = await create_pool(settings, max_size=1)
    try:
        async with pool.acquire() as conn:
            for name, value in SESSION_LIMITS.items():
                shown = await conn.fetchval("SELECT setting FROM pg_settings WHERE name = $1", name)
                assert shown == value, name
    finally:
        await pool.close()


async def test_batch_pools_keep_batch_statements_on_indexes_for_every_transaction(
    settings: Settings,
) -> None:
    """A batch pool's sessions turn hash and merge joins off for good (not per transaction),
    and a session keeps them from one use to the next (no reset on release)."""
    pool = await create_pool(settings, max_size=1, batches=True)
    try:
        for _ in range(2):
            async with pool.acquire() as conn, conn.transaction():
                for name, value in BATCH_PLANNER.items():
                    assert await conn.fetchval(f"SHOW {name}") == value, name
    finally:
        await pool.close()
    plain = await create_pool(settings, max_size=1)
    try:
        assert await plain.fetchval("SHOW enable_hashjoin") == "on"
    finally:
        await plain.close()


async def test_a_session_ended_for_idling_in_a_transaction_is_retried(
    settings: Settings,
) -> None:
    """What the server raises when it ends a session idle in a transaction is classified as
    the connection gone: retried (after a probe), never a reason to stop."""
    raised: list[BaseException] = []
    watcher = await asyncpg.connect(settings.database_url.get_secret_value())
    async with connect(settings) as conn:
        pid = conn.get_server_pid()

        async def ended() -> bool:
            gone = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)"
            return bool(await watcher.fetchval(gone, pid))

        with contextlib.suppress(asyncpg.InterfaceError):  # the rollback finds no session
            async with conn.transaction():
                await conn.execute("SET LOCAL idle_in_transaction_session_timeout = 100")
                try:
                    await eventually(ended, timeout=10, interval=0.05)
                finally:
                    await watcher.close()
                try:
                    await conn.fetchval("SELECT 1")
                except Exception as exc:
                    raised.append(exc)
                    raise
    assert raised, "the server did not end the session"
    assert is_transient(raised[0]), repr(raised[0])
    assert is_unreachable(raised[0]), repr(raised[0])
