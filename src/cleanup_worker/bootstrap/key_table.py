"""The key table every statement is built for: the settings' mapping, checked against the
catalog once at start ("Key table mapping", docs/design.md), then installed for the process.

A table or column that is missing, or of a type the statements cannot compare, stops the
program here with one line naming the setting (exit code 2), never at the first revocation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cleanup_worker.adapters.postgres import connections as postgres
from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection, Pool
from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.key_table_owner import owner_sql
from cleanup_worker.settings import Settings


async def install_key_table(conn: Connection, settings: Settings) -> KeyTable:
    """Reads the mapped table's columns, checks them and installs the table; our own api_keys
    needs no catalog read."""
    table = await key_table.load(conn, settings.key_table)
    key_table.use(table)
    return table


async def install_key_table_from(pool: Pool, settings: Settings) -> KeyTable:
    async with pool.acquire() as conn:
        return await install_key_table(conn, settings)


@asynccontextmanager
async def connect_with_key_table(settings: Settings) -> AsyncIterator[Connection]:
    """`postgres.connect`, with the key table checked and installed before the first statement
    (the backfill opens its connections through this)."""
    async with postgres.connect(settings) as conn:
        await install_key_table(conn, settings)
        yield conn


def key_table_owner_sql(settings: Settings) -> str:
    """`migrate --print-key-table-sql`: what the owner of the mapped table applies; built from
    the settings alone (no connection). Our own api_keys needs nothing: migrate makes it."""
    mapping = settings.key_table
    if mapping.is_default:
        return (
            "-- CLEANUP_KEYS_TABLE is unset: the keys live in our own api_keys, which\n"
            "-- `cleanup-worker migrate` creates with its indexes, trigger and grants.\n"
        )
    return owner_sql(KeyTable(mapping))
