"""An existing key table of another shape, met by `migrate` and `run` (docs/key-table.md; "Key
table mapping", docs/design.md): `migrate` keeps its hands off the table, and a mapping that
does not fit the catalog stops start-up. `doctor` on it: test_key_table_doctor.py."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from cleanup_worker.errors import EXIT_CONFIG, EXIT_REFUSED
from cleanup_worker.settings import Settings
from testkit import key_rows
from testkit.key_tables import BILLING, KEYRING, KeyTableShape
from testkit.processes import cli
from testkit.services import Services, with_database

# The mapped table's whole definition: columns, defaults, indexes, constraints, triggers,
# rights, storage options, owner. `migrate` must leave every row of it as it was.
_DEFINITION = """
SELECT 'attribute', a.attnum::text, a.attname, format_type(a.atttypid, a.atttypmod),
       a.attnotnull::text || a.attidentity::text || a.attgenerated::text || a.atthasdef::text
       || a.attisdropped::text || coalesce(a.attacl::text, '') || a.attcollation::text
       || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute AS a LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1::regclass AND a.attnum > 0
UNION ALL
SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid),
       i.indisvalid::text || i.indisready::text || i.indisunique::text, i.indkey::text
FROM pg_index AS i WHERE i.indrelid = $1::regclass
UNION ALL
SELECT 'constraint', c.conname, pg_get_constraintdef(c.oid), c.contype::text,
       c.convalidated::text
FROM pg_constraint AS c WHERE c.conrelid = $1::regclass
UNION ALL
SELECT 'trigger', t.tgname, pg_get_triggerdef(t.oid), t.tgenabled::text, t.tgisinternal::text
FROM pg_trigger AS t WHERE t.tgrelid = $1::regclass
UNION ALL
SELECT 'relation', c.relname, coalesce(c.relacl::text, ''), coalesce(c.reloptions::text, ''),
       c.relowner::regrole::text || c.relkind::text || c.relreplident::text
       || c.relrowsecurity::text || c.relpersistence::text
FROM pg_class AS c WHERE c.oid = $1::regclass
ORDER BY 1, 2, 3
"""


async def definition(conn: Any, shape: KeyTableShape) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await conn.fetch(_DEFINITION, shape.qualified)]


@pytest.fixture
async def empty_database(services: Services) -> AsyncIterator[str]:
    """A database no migration has touched."""
    name = f"cw_keys_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(services.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield with_database(services.database_url, name)
    admin = await asyncpg.connect(services.database_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def migrate_process(database_url: str, env: dict[str, str]) -> tuple[int, str]:
    """`cleanup-worker migrate` as a deploy step runs it: its exit code and its stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cleanup_worker", "migrate",
        env={**os.environ, "CLEANUP_DATABASE_URL": database_url, "CLEANUP_LOG_FORMAT": "json",
             **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()


@pytest.mark.parametrize("shape", [BILLING, KEYRING], ids=lambda shape: shape.name)
async def test_migrate_leaves_the_mapped_table_as_it_was(
    empty_database: str, shape: KeyTableShape
) -> None:
    """`migrate` with a mapping, on a database whose key table its owner made and readied,
    creates our tables and leaves the mapped table's definition byte for byte as it was,
    run once and run again."""
    conn = await asyncpg.connect(empty_database)
    try:
        await key_rows.create_table(conn, shape)
        await key_rows.apply_owner_sql(conn, shape, empty_database)
        before = await definition(conn, shape)
        for _ in range(2):
            code, err = await migrate_process(empty_database, shape.env())
            assert code == 0, err[-2000:]
            assert await definition(conn, shape) == before
        assert await conn.fetchval("SELECT to_regclass('public.account_memberships')") is not None
    finally:
        await conn.close()


async def test_migrate_without_a_mapping_points_to_the_settings(empty_database: str) -> None:
    """Without a mapping, `migrate` meeting an api_keys of another shape refuses in one line
    that names the mapping's setting and docs/key-table.md."""
    conn = await asyncpg.connect(empty_database)
    try:
        await conn.execute(
            'CREATE TABLE api_keys ("keyId" bigint PRIMARY KEY, "tenantId" uuid, status text)'
        )
    finally:
        await conn.close()
    code, err = await migrate_process(empty_database, {})
    assert code == EXIT_REFUSED
    [line] = err.strip().splitlines()
    assert "CLEANUP_KEYS_TABLE" in line
    assert "docs/key-table.md" in line


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"CLEANUP_KEYS_USER_COLUMN": "ownerId"}, "CLEANUP_KEYS_USER_COLUMN"),
        ({"CLEANUP_KEYS_CREATED_COLUMN": "label"}, "CLEANUP_KEYS_CREATED_COLUMN"),
        ({"CLEANUP_KEYS_REVOKED_STATE": ""}, "CLEANUP_KEYS_REVOKED_STATE"),
    ],
    ids=["missing column", "wrong type", "state without revoked state"],
)
@pytest.mark.parametrize("key_shape", ["billing"], indirect=True)
async def test_a_mapping_that_does_not_fit_stops_run_at_start(
    settings: Settings, change: dict[str, str], setting: str
) -> None:
    """`run` on a mapping with a missing column, a column of the wrong type, or a state
    column without its revoked state exits 2 at start with one line naming the setting."""
    code, _, err = await asyncio.wait_for(cli(settings, "run", **change), timeout=60)
    assert code == EXIT_CONFIG
    [line] = err.strip().splitlines()
    assert setting in line
    assert "Traceback" not in err
