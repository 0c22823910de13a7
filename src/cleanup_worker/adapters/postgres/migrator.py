"""Versioned SQL migrations shipped as package data, applied under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.contract import contract_shortfalls
from cleanup_worker.adapters.postgres.locks import MIGRATION_LOCK_KEY
from cleanup_worker.errors import ContractMismatch, MigrationError
from cleanup_worker.logging import get_logger

log = get_logger(__name__)

# Any constant will do; it only has to be the same for every pod of this product.

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


# Earlier texts of migrations whose comments alone were reworded since (the references to the
# design now point into the repository): a database that applied the earlier text has applied
# the same SQL, so its recorded checksum still counts as this file's.
_REWORDED: dict[int, frozenset[str]] = {
    1: frozenset({"e8e5e0c7f29933a51cbb599f6cb05d07a1256cd106d8dd65be543cc700f099ff"}),
    9: frozenset({"09991dc8ea6c49bf7c9335e2441290138b30d9934fb480d896a75b4329b010f0"}),
}


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def applied_as(self, checksum: str) -> bool:
        """Whether a database that recorded `checksum` applied this file's SQL."""
        return checksum == self.checksum or checksum in _REWORDED.get(self.version, frozenset())


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("cleanup_worker.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {versions}")
    return found


async def refuse_other_shapes(conn: Connection) -> None:
    """Raises ContractMismatch, naming what is lacking, when an existing contract table has
    another shape."""
    shortfalls = await contract_shortfalls(conn)
    if shortfalls:
        lacking = "; ".join(f"{t} lacks {', '.join(cols)}" for t, cols in shortfalls.items())
        raise ContractMismatch(
            f"existing tables have another shape than the contract needs: {lacking}. "
            "Nothing was changed. To revoke keys in an existing key table, map it with "
            "CLEANUP_KEYS_TABLE and the other CLEANUP_KEYS_* settings (docs/key-table.md)"
        )


async def refuse_to_alter_the_mapped_table(conn: Connection, mapped_table: str) -> None:
    """Raises ContractMismatch when the mapped key table (quoted) is the `api_keys` that the
    migrations create and alter: a table we do not own is never altered."""
    same = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL AND to_regclass($1) = to_regclass('api_keys')",
        mapped_table,
    )
    if same:
        raise ContractMismatch(
            "CLEANUP_KEYS_TABLE: names the api_keys that `migrate` creates and alters in its "
            "own schema; run the migrations in a schema of their own (the login's search_path)"
            " so that they never touch the mapped table (docs/key-table.md). Nothing was changed"
        )


async def migrate(conn: Connection, *, mapped_table: str | None = None) -> list[Migration]:
    """Applies what is missing, each file in its own transaction; returns what it applied.
    `mapped_table`: the key table of another shape that the keys live in (quoted), if any.

    Several pods may run this at once: the session advisory lock makes them take turns,
    and whoever comes second finds nothing left to do.
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        if mapped_table is not None:
            await refuse_to_alter_the_mapped_table(conn, mapped_table)
        # The contract first, before anything is written: a key table of another shape that
        # the worker joins would otherwise fail half-way, in a migration's index.
        await refuse_other_shapes(conn)
        await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        done: list[Migration] = []
        for migration in available_migrations():
            previous = applied.get(migration.version)
            if previous is not None:
                if not migration.applied_as(previous["checksum"]):
                    raise MigrationError(
                        f"migration {migration.version:04d}_{previous['name']} was changed "
                        "after it was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("db.migration.applied", version=migration.version, name=migration.name)
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
