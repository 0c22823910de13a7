"""`cleanup-worker migrate` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from typing import Any

import asyncpg
import pytest

from cleanup_worker.adapters.postgres.migrator import available_migrations, migrate
from cleanup_worker.errors import EXIT_REFUSED, MigrationError
from testkit.services import Services, with_database


@pytest.fixture
async def empty_database_url(services: Services) -> Any:
    name = f"cw_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(services.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield with_database(services.database_url, name)
    admin = await asyncpg.connect(services.database_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _migrate(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return len(await migrate(conn))
    finally:
        await conn.close()


def _shipped() -> list[tuple[int, str, str]]:
    return [(m.version, m.name, m.checksum) for m in available_migrations()]


async def _recorded(url: str) -> list[tuple[int, str, str]]:
    """The migrations `schema_migrations` says were applied, in order."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version"
        )
    finally:
        await conn.close()
    return [(row["version"], row["name"], row["checksum"]) for row in rows]


async def _schema(url: str) -> list[tuple[Any, ...]]:
    """Every column, constraint, index and trigger of the public schema."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT 'column', table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' "
            "UNION ALL SELECT 'constraint', conrelid::regclass::text, conname, "
            "pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace "
            "UNION ALL SELECT 'index', tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' "
            "UNION ALL SELECT 'trigger', tgrelid::regclass::text, tgname, "
            "pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal "
            "ORDER BY 1, 2, 3"
        )
    finally:
        await conn.close()
    return [tuple(row) for row in rows]


async def test_second_migrate_changes_nothing(empty_database_url: str) -> None:
    """Running migrate twice applies everything once, then nothing: the second run records
    nothing and leaves the schema as the first made it."""
    assert await _migrate(empty_database_url) == len(available_migrations())
    recorded, schema = await _recorded(empty_database_url), await _schema(empty_database_url)
    assert recorded == _shipped()
    assert any(row[:3] == ("column", "api_keys", "revoked_by") for row in schema)
    assert await _migrate(empty_database_url) == 0
    assert await _recorded(empty_database_url) == recorded
    assert await _schema(empty_database_url) == schema


async def test_concurrent_migrates_both_succeed(empty_database_url: str) -> None:
    """Several pods migrating at once all succeed and the schema is applied exactly once."""
    counts = await asyncio.gather(*(_migrate(empty_database_url) for _ in range(3)))
    assert sorted(counts) == [0, 0, len(available_migrations())]
    assert await _recorded(empty_database_url) == _shipped()


async def test_changed_applied_migration_is_an_error(db: Any) -> None:
    """A migration edited after it was applied is refused rather than silently skipped."""
    await db.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(db)
    assert await db.fetchval("SELECT checksum FROM schema_migrations WHERE version = 1") == (
        "edited"
    )


async def test_contract_tables_exist_with_their_columns(db: Any) -> None:
    """The "Database contract" tables (docs/design.md) carry exactly the contract columns."""
    rows = await db.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_name IN ('api_keys', 'account_memberships') ORDER BY ordinal_position"
    )
    columns: dict[str, list[str]] = {}
    for row in rows:
        columns.setdefault(row["table_name"], []).append(row["column_name"])
    assert columns["api_keys"] == [
        "id", "account_id", "iam_id", "name", "key_hash", "created_at",
        "revoked_at", "revocation_reason", "revoked_by",
    ]  # fmt: skip
    assert columns["account_memberships"] == [
        "account_id", "iam_id", "state", "member_since", "changed_at",
    ]  # fmt: skip


@pytest.fixture
async def as_worker_role(db: Any) -> Any:
    """A connection to the test database that acts with only the worker role's privileges."""
    await db.execute(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash) VALUES ($1, 'a', 'u', 'h')",
        uuid.uuid4(),
    )
    await db.execute("SET ROLE cleanup_worker")
    yield db
    await db.execute("RESET ROLE")


async def test_worker_role_can_revoke_keys(as_worker_role: Any) -> None:
    """The least-privilege role may set the revocation columns."""
    status = await as_worker_role.execute(
        "UPDATE api_keys SET revoked_at = now(), revocation_reason = 'orphaned', "
        "revoked_by = 'backfill:x'"
    )
    assert status == "UPDATE 1"


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash) "
        "VALUES (gen_random_uuid(), 'a', 'u', 'h')",
        "DELETE FROM api_keys",
        "UPDATE api_keys SET key_hash = 'other'",
        "UPDATE api_keys SET created_at = now()",
        "DROP TABLE api_keys",
    ],
)
async def test_worker_role_cannot_create_delete_or_rewrite_keys(
    as_worker_role: Any, statement: str
) -> None:
    """The least-privilege role cannot create, delete or alter keys beyond revoking them."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await as_worker_role.execute(statement)


async def test_worker_role_keeps_its_own_tables(as_worker_role: Any) -> None:
    """The worker role writes membership rows and its ledger."""
    membership = await as_worker_role.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, changed_at) "
        "VALUES ('a', 'u', 'removed', now())"
    )
    ledger = await as_worker_role.execute(
        "INSERT INTO membership_events (source, event_id, account_id, iam_id, change, "
        "event_time, event_type) VALUES ('s', 'i', 'a', 'u', 'removed', now(), 't')"
    )
    assert (membership, ledger) == ("INSERT 0 1", "INSERT 0 1")
    joined = await as_worker_role.fetchval(
        "SELECT count(*) FROM account_memberships JOIN membership_events USING (account_id, iam_id)"
    )
    assert joined == 1


async def test_migrate_refuses_a_key_table_of_another_shape(
    empty_database_url: str, services: Services
) -> None:
    """A new user's database already has an api_keys of its own shape: `migrate`, as a real
    process, exits 3 with one line naming what the contract needs that the table lacks, and
    changes nothing (no table, no column, no index, not even its bookkeeping)."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute(
            "CREATE TABLE api_keys (key_id text PRIMARY KEY, tenant text, user_id text, "
            "status text)"
        )
        before = await conn.fetch(_SCHEMA)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cleanup_worker", "migrate",
            env={**os.environ, "CLEANUP_DATABASE_URL": empty_database_url,
                 "CLEANUP_LOG_FORMAT": "json"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await process.communicate()
        assert process.returncode == EXIT_REFUSED
        lines = err.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert "Traceback" not in err.decode()
        for needed in ("id uuid", "account_id text", "iam_id text", "revoked_at timestamp"):
            assert needed in lines[0]
        assert await conn.fetch(_SCHEMA) == before
    finally:
        await conn.close()


# Every relation, column and trigger in the database's own schemas.
_SCHEMA = """
SELECT c.relname, c.relkind, a.attname, format_type(a.atttypid, a.atttypmod)
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
ORDER BY 1, 3
"""
