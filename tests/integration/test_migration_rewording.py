"""A database migrated before a migration's comments were reworded migrates on: the SQL it
applied is the same, so `migrate` must not call the file changed."""

from __future__ import annotations

from typing import Any

import pytest

from cleanup_worker.adapters.postgres.migrator import migrate
from cleanup_worker.errors import MigrationError

# sha256 of the files as they were at 7a7a311, before their comments pointed into docs/:
# `git show 7a7a311:src/cleanup_worker/migrations/0001_contract_tables.sql | sha256sum`
EARLIER = {
    1: "e8e5e0c7f29933a51cbb599f6cb05d07a1256cd106d8dd65be543cc700f099ff",
    9: "09991dc8ea6c49bf7c9335e2441290138b30d9934fb480d896a75b4329b010f0",
}


@pytest.mark.parametrize("version", sorted(EARLIER))
async def test_earlier_text_of_a_reworded_migration_counts_as_applied(
    db: Any, version: int
) -> None:
    """The checksum recorded for a migration's earlier text is accepted, and nothing reruns."""
    await db.execute(
        "UPDATE schema_migrations SET checksum = $1 WHERE version = $2", EARLIER[version], version
    )
    assert await migrate(db) == []


async def test_another_text_of_a_reworded_migration_is_still_refused(db: Any) -> None:
    """Only the known earlier text is accepted: any other edit is refused as before."""
    await db.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 9")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(db)
