"""The PostgreSQL connection pool and the classification of its errors by SQLSTATE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import stamina

from cleanup_worker.errors import ServiceUnavailable
from cleanup_worker.logging import get_logger
from cleanup_worker.settings import Settings

log = get_logger(__name__)

# Worth another try: the connection went away, the server is restarting or busy,
# or the transaction lost a race that a retry will win.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57P")
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def is_transient(exc: BaseException) -> bool:
    """True when the same work may succeed if tried again after a pause."""
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        return sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES)
    return isinstance(
        exc,
        OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError,
    ) and not isinstance(exc, asyncpg.InterfaceWarning)


async def create_pool(settings: Settings, *, max_size: int | None = None) -> Any:
    """A pool that keeps trying to reach the database until it answers (start-up may race it)."""
    size = max_size or settings.database_pool_size

    async for attempt in stamina.retry_context(
        on=is_transient, attempts=None, timeout=None, wait_max=settings.retry_max_wait_s
    ):
        with attempt:
            if attempt.num > 1:
                log.warning("db.connect.retry", attempt=attempt.num)
            return await asyncpg.create_pool(
                dsn=settings.database_url.get_secret_value(),
                min_size=1,
                max_size=size,
                command_timeout=settings.database_statement_timeout_ms / 1000 + 5,
                server_settings={
                    "application_name": "cleanup-worker",
                    "statement_timeout": str(settings.database_statement_timeout_ms),
                    # A revocation must never wait long behind someone else's lock.
                    "lock_timeout": str(min(settings.database_statement_timeout_ms, 10_000)),
                },
            )
    raise AssertionError("unreachable: stamina retries forever")  # pragma: no cover


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Any]:
    """One connection outside a pool, for one-shot commands such as `migrate`.

    A database that is still starting is waited for, up to the connect timeout.
    """
    try:
        async for attempt in stamina.retry_context(
            on=is_transient,
            attempts=None,
            timeout=settings.database_connect_timeout_s,
            wait_max=settings.retry_max_wait_s,
        ):
            with attempt:
                conn = await asyncpg.connect(
                    dsn=settings.database_url.get_secret_value(),
                    server_settings={"application_name": "cleanup-worker"},
                )
    except Exception as exc:
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


async def ping(pool: Any) -> bool:
    """Readiness: can we run a query right now?"""
    try:
        async with asyncio.timeout(2):
            await pool.fetchval("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means "not ready"; the caller only needs a bool
        return False
    return True
