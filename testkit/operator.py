"""A read-only operator login (IN ROLE cleanup_operator, migration 0010) for the test's
database: `explain` and `report` are run as it, to show they need no more than its grants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def as_user(url: str, user: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@asynccontextmanager
async def operator_login(database_url: str, role: str = "cleanup_operator") -> AsyncIterator[str]:
    """The DSN of a new login in `role` (dropped afterwards; roles are cluster-wide). The dev
    server trusts loopback logins, so it needs no password."""
    name = f"op_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE {role}")
        yield as_user(database_url, name)
    finally:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
        )
        await conn.execute(f"DROP ROLE IF EXISTS {name}")
        await conn.close()
