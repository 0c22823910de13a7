"""PostgreSQL connections: the worker's pool, one-shot connections, and the readiness ping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from cleanup_worker.adapters.postgres.sqlstate import (
    describe,
    is_login_refused,
    is_transient,
    is_unreachable,
)
from cleanup_worker.errors import ServiceUnavailable
from cleanup_worker.retries import Reachability, retrying
from cleanup_worker.settings import Settings

# Quoted: asyncpg's classes are generic only in its type stubs.
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
# A connection of our own, or one lent by the pool: every adapter takes either.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


# What the server does about a client that went away without a word (a partition, a
# SIGKILLed pod whose TCP connection stays half-open): left to the kernel's defaults it keeps
# the session, and the session's locks on members, outbox rows and the sweep's cursor, for
# two hours. Our transactions never wait for anything but the network inside, the longest
# being the relay's broker acknowledgement (30 s), so a minute idle inside one means the
# client is gone; probes find a dead peer of an idle session within 30 + 3 x 10 s; and data
# unacknowledged for a minute ends the connection.
SESSION_LIMITS = {
    "idle_in_transaction_session_timeout": "60000",
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


# Every batch statement joins a few hundred (account, iam) pairs to large tables through
# their indexes. With a batch of a few thousand the planner may prefer hashing a whole table
# instead, which grows with the table rather than the batch; this keeps the cost proportional
# to the batch. Set for the sessions of the pools that apply batches: a `SET LOCAL` in each
# transaction was a round trip on every batch's path.
BATCH_PLANNER = {"enable_hashjoin": "off", "enable_mergejoin": "off"}


async def _keep_session(_: object) -> None:
    """A batch pool's reset between uses: nothing. asyncpg's default sends one more query
    on every release (unlock advisory locks, close cursors, UNLISTEN, RESET ALL), and a batch
    connection holds none of those; an open transaction is still rolled back by asyncpg."""


def command_timeout_s(settings: Settings) -> float:
    """The client's bound on one statement: the server's statement timeout, and a margin for
    the answer to arrive. A stalled link ends a statement (and its rollback) after this."""
    return settings.database_statement_timeout_ms / 1000 + 5


# A probe is one connection attempt; one that takes longer than this counts as unanswered.
PROBE_TIMEOUT_S = 2.0


def reachability(settings: Settings) -> Reachability:
    """The database's `Reachability` (retries.py): probed with a connection of its own, so
    that a probe never waits for, or spoils, a pooled connection."""

    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(
                dsn=settings.database_url.get_secret_value(),
                timeout=PROBE_TIMEOUT_S,
                server_settings={"application_name": "cleanup-worker-probe"},
            )
        except Exception:  # noqa: BLE001 - any failure means "still unreachable"
            return False
        await conn.close(timeout=PROBE_TIMEOUT_S)
        return True

    database = Reachability(
        "database",
        probe,
        explains=is_unreachable,
        interval_s=settings.outage_probe_interval_s,
    )
    # The pools' own reconnect loop: without this, one warning with a traceback every few
    # seconds, per pool, for as long as the database is away.
    database.absorb("asyncpg.pool", "Failed to restore the pool connection floor")
    return database


async def create_pool(
    settings: Settings,
    *,
    max_size: int | None = None,
    reachable: Reachability | None = None,
    batches: bool = False,
) -> Pool:
    """A pool that keeps trying to reach the database until it answers (start-up may race it).

    A refused login is waited out too: the worker stays unready, with one line a retry naming
    the error, until the password or pg_hba.conf is fixed, instead of crash-looping.
    `batches`: the pool applies batches (BATCH_PLANNER, and no reset query between uses).
    """
    size = max_size or settings.database_pool_size

    async for attempt in retrying(
        "database.connect",
        on=lambda exc: is_transient(exc) or is_login_refused(exc),
        wait_max=settings.retry_max_wait_s,
        reachability=reachable,
    ):
        with attempt:
            return await asyncpg.create_pool(
                dsn=settings.database_url.get_secret_value(),
                min_size=1,
                max_size=size,
                command_timeout=command_timeout_s(settings),
                server_settings={
                    "application_name": "cleanup-worker",
                    "statement_timeout": str(settings.database_statement_timeout_ms),
                    # A revocation must never wait long behind someone else's lock. Shorter than
                    # the statement timeout, so that a lock wait ends as a lost race (55P03,
                    # retried) and never as a statement timeout (57014), which would dead-letter
                    # a valid event as too costly.
                    "lock_timeout": str(min(settings.database_statement_timeout_ms // 2, 10_000)),
                    **SESSION_LIMITS,
                    **(BATCH_PLANNER if batches else {}),
                },
                reset=_keep_session if batches else None,
            )
    raise AssertionError("unreachable: stamina retries forever")  # pragma: no cover


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
    """One connection outside a pool, for one-shot commands such as `migrate`.

    A database that is still starting is waited for, up to the connect timeout.
    """
    try:
        async for attempt in retrying(
            "database.connect",
            on=is_transient,
            timeout=settings.database_connect_timeout_s,
            wait_max=settings.retry_max_wait_s,
        ):
            with attempt:
                conn = await asyncpg.connect(
                    dsn=settings.database_url.get_secret_value(),
                    server_settings={"application_name": "cleanup-worker", **SESSION_LIMITS},
                )
    except Exception as exc:
        if is_login_refused(exc):
            # One line, no traceback; never the DSN (it holds the password).
            raise ServiceUnavailable(
                f"database refused the login ({describe(exc)}): check the user and password "
                "in CLEANUP_DATABASE_URL, and that pg_hba.conf admits it over this connection"
            ) from None
        if not is_transient(exc):
            raise
        raise ServiceUnavailable(
            f"database unreachable after {settings.database_connect_timeout_s:g}s "
            f"({type(exc).__name__}: {exc})"
        ) from None
    try:
        yield conn
    finally:
        await conn.close()


async def ping(pool: Pool) -> bool:
    """Readiness: can we run a query right now?"""
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means "not ready"; the caller only needs a bool
        return False
    return True
