"""A mapped key table's owner side (docs/key-table.md): `migrate --print-key-table-sql` prints
what the owner applies, R4's trigger then guards the table, and `doctor` checks the indexes, the
trigger and the worker login's rights, pointing to the printed SQL when one is missing."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.key_table_owner import owner_sql
from cleanup_worker.errors import EXIT_FAILED, EXIT_REFUSED
from cleanup_worker.settings import Settings
from testkit.events import at
from testkit.key_tables import KEYSVC_STATE_ONLY as MAPPING
from testkit.operator import operator_login
from testkit.processes import cli
from tests.integration.test_doctor import doctor, failures
from tests.integration.test_key_table_mapping import CREATE, ENV, add_key, mapped

PRINTED = "--print-key-table-sql"


def _key_table_rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        c["name"]: c
        for c in report["checks"]
        if "keysvc.ApiKeys" in c["name"] or c["name"].startswith("rights of login")
    }


async def test_migrate_prints_the_owners_sql_without_touching_the_table(
    settings: Settings, db: Any
) -> None:
    """The printed SQL is the owner's script for the mapping, and printing it changes nothing."""
    await db.execute(CREATE)
    code, out, err = await cli(settings, "migrate", PRINTED, **ENV)
    assert code == 0, err
    assert out == owner_sql(KeyTable(MAPPING))
    indexes = await db.fetchval(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'keysvc.\"ApiKeys\"'::regclass"
    )
    assert indexes == 1  # the primary key only


async def test_the_printed_trigger_keeps_a_revoked_key_revoked(mapped: Any) -> None:
    """R4 on the mapped table: making a revoked key active (or expired) again is refused."""
    key = await add_key(mapped, 1001, "alice", at(0), "revoked")
    for status in ("active", "expired"):
        with pytest.raises(asyncpg.PostgresError) as raised:
            await mapped.execute(
                'UPDATE keysvc."ApiKeys" SET status = $2 WHERE "keyId" = $1', key, status
            )
        assert raised.value.sqlstate == "CW001"
    other = await add_key(mapped, 1001, "alice", at(0))
    await mapped.execute(
        'UPDATE keysvc."ApiKeys" SET status = \'expired\' WHERE "keyId" = $1', other
    )


async def test_doctor_passes_a_mapped_table_prepared_by_its_owner(
    settings: Settings, mapped: Any, database_url: str
) -> None:
    """As a login in cleanup_worker: columns, both indexes, the trigger and the rights pass."""
    async with operator_login(database_url, "cleanup_worker") as login:
        _, report = await doctor(settings, CLEANUP_DATABASE_URL=login, **ENV)
    rows = _key_table_rows(report)
    assert {name: row["outcome"] for name, row in rows.items()} == {
        "key table keysvc.ApiKeys": "pass",
        "index of keysvc.ApiKeys by member": "pass",
        "index of keysvc.ApiKeys by created": "pass",
        "trigger cleanup_revocation_is_permanent on keysvc.ApiKeys (R4)": "pass",
        f"rights of login {login.split('//')[1].split('@')[0]} on keysvc.ApiKeys": "pass",
    }


async def test_doctor_names_what_the_owner_has_not_applied(
    settings: Settings, db: Any, database_url: str
) -> None:
    """On the bare table: both indexes, the trigger and the rights fail, each fix pointing to
    `migrate --print-key-table-sql`."""
    await db.execute(CREATE)
    await db.execute("GRANT USAGE ON SCHEMA keysvc TO cleanup_worker")
    await db.execute('GRANT SELECT ON keysvc."ApiKeys" TO cleanup_worker')
    async with operator_login(database_url, "cleanup_worker") as login:
        code, report = await doctor(settings, CLEANUP_DATABASE_URL=login, **ENV)
    assert code == EXIT_FAILED
    failed = {n: r for n, r in failures(report).items() if n in _key_table_rows(report)}
    assert len(failed) == 4, failed
    assert all(PRINTED in row["fix"] for row in failed.values())
    rights = next(row for name, row in failed.items() if name.startswith("rights"))
    assert rights["detail"] == "lacks UPDATE (status)"


async def test_doctor_names_a_right_beyond_revoking(
    settings: Settings, mapped: Any, database_url: str
) -> None:
    """A worker login that may also insert into the key table is named as such."""
    await mapped.execute('GRANT INSERT ON keysvc."ApiKeys" TO cleanup_worker')
    async with operator_login(database_url, "cleanup_worker") as login:
        code, report = await doctor(settings, CLEANUP_DATABASE_URL=login, **ENV)
    assert code == EXIT_FAILED
    [row] = [r for n, r in failures(report).items() if n.startswith("rights of login")]
    assert row["detail"] == "may also INSERT: more than revoking needs"


__all__ = ["mapped"]


async def test_migrate_refuses_a_mapping_onto_its_own_api_keys(settings: Settings) -> None:
    """Mapping the api_keys that the migrations alter is refused with exit 3 and one line
    naming CLEANUP_KEYS_TABLE."""
    code, _, err = await cli(
        settings, "migrate", **{**ENV, "CLEANUP_KEYS_TABLE": "public.api_keys"}
    )
    assert code == EXIT_REFUSED
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "CLEANUP_KEYS_TABLE" in lines[0]
