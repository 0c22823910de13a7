"""What the benchmarks share: the dev services' addresses and a throwaway database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from cleanup_worker.adapters.postgres.migrator import migrate
from tests.services import dev_env

ROOT = Path(__file__).resolve().parent.parent


def service_env() -> dict[str, str]:
    """CLEANUP_DATABASE_URL and CLEANUP_KAFKA_BOOTSTRAP_SERVERS: from the environment, else
    from `.dev/env` (run `scripts/dev-services up` first)."""
    env_file = ROOT / ".dev" / "env"
    values = dev_env(env_file) if env_file.exists() else {}
    for key in ("CLEANUP_DATABASE_URL", "CLEANUP_KAFKA_BOOTSTRAP_SERVERS"):
        if os.environ.get(key):
            values[key] = os.environ[key]
        if not values.get(key):
            raise SystemExit(f"{key} is not set: run `scripts/dev-services up` first")
    return values


@asynccontextmanager
async def scratch_database(admin_url: str, prefix: str) -> AsyncIterator[str]:
    """A freshly migrated database that is dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    try:
        yield url
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
