"""`cleanup-worker doctor`'s database checks: read-only questions to the catalog, each answered
as a `Check` with what to do when it fails."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.contract import CONTRACT, shortfall, table_columns
from cleanup_worker.adapters.postgres.migrator import available_migrations
from cleanup_worker.domain.checks import Check

DB = "database"
MIGRATE = "run `cleanup-worker migrate` as the schema owner"

# The indexes the worker's statements rely on, by table (migrations 0001, 0002, 0008, 0010).
INDEXES = {
    "api_keys_live_by_member": "R1 and its re-check find a member's live keys",
    "api_keys_live_by_created_at": "the late-key sweep reads the newest live keys",
    "api_keys_by_member": "`explain` lists a member's keys",
    "api_keys_by_revoked_at": "`report` reads one period's revocations",
    "membership_events_by_member": "R3 reads a member's history",
    "membership_events_by_applied_at": "`report` reads one period's removals",
}
TRIGGER = "api_keys_revocation_is_permanent"

# What the worker's login needs (migrations 0003-0009, 0014; docs/database-role.md).
_RW = ("SELECT", "INSERT", "UPDATE", "DELETE")
TABLE_GRANTS: dict[str, tuple[str, ...]] = {
    "api_keys": ("SELECT",),
    "account_memberships": _RW,
    "membership_events": _RW,
    "membership_baselines": _RW,
    "backfill_runs": ("SELECT", "INSERT", "UPDATE"),
    "dlq_redrives": ("SELECT", "INSERT", "UPDATE"),
    "member_locks": ("SELECT", "INSERT", "UPDATE"),
    "late_key_sweep": ("SELECT", "UPDATE"),
    "late_key_candidates": ("SELECT", "INSERT", "DELETE"),
    "revocation_outbox": ("SELECT", "INSERT", "DELETE"),
    "revocation_outbox_batches": ("SELECT", "INSERT", "DELETE"),
    "schema_migrations": ("SELECT",),
}
COLUMN_GRANTS = {
    ("api_keys", c): "UPDATE" for c in ("revoked_at", "revocation_reason", "revoked_by")
}
# Beyond this, the database's clock (keys' created_at, revoked_at) and the worker's (the
# future-skew rule, R6's settle delay) disagree enough to shift what a rule covers.
MAX_CLOCK_SKEW_S = 1.0


async def contract(conn: Connection) -> list[Check]:
    checks = []
    for table in CONTRACT:
        columns = await table_columns(conn, table)
        if columns is None:
            checks.append(Check.failed(DB, f"table {table}", "missing", MIGRATE))
        elif missing := shortfall(table, columns):
            checks.append(
                Check.failed(
                    DB,
                    f"table {table}",
                    f"lacks {', '.join(missing)}",
                    "the table has another shape; see docs/database-role.md",
                )
            )
        else:
            checks.append(Check.passed(DB, f"table {table}", "columns and types as contracted"))
    return checks


_INDEX = """
SELECT i.indisvalid AND i.indisready AS valid, t.relname AS table
FROM pg_index AS i JOIN pg_class AS t ON t.oid = i.indrelid
WHERE i.indexrelid = to_regclass($1)
"""


async def indexes(conn: Connection) -> list[Check]:
    checks = []
    for name, why in INDEXES.items():
        row = await conn.fetchrow(_INDEX, name)
        label = f"index {name}"
        if row is None:
            checks.append(Check.failed(DB, label, f"missing ({why})", MIGRATE))
        elif not row["valid"]:
            checks.append(
                Check.failed(
                    DB,
                    label,
                    "invalid (a failed CREATE INDEX CONCURRENTLY)",
                    f"DROP INDEX {name}; then {MIGRATE}, or build it again concurrently",
                )
            )
        else:
            checks.append(Check.passed(DB, label, f"valid ({why})"))
    return checks


_TRIGGER = """
SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = to_regclass('api_keys') AND tgname = $1
"""


async def trigger(conn: Connection) -> Check:
    label = f"trigger {TRIGGER} (R4)"
    state = await conn.fetchval(_TRIGGER, TRIGGER)
    if state is None:
        return Check.failed(DB, label, "missing: revoked keys could be un-revoked", MIGRATE)
    if state != "A":
        seen = {"D": "disabled", "O": "enabled (origin only)", "R": "enabled (replica only)"}
        return Check.failed(
            DB,
            label,
            f"{seen.get(state, state)}, not ALWAYS: revoked keys could be un-revoked",
            f"ALTER TABLE api_keys ENABLE ALWAYS TRIGGER {TRIGGER} (as the table's owner)",
        )
    return Check.passed(DB, label, "enabled ALWAYS")


async def grants(conn: Connection) -> Check:
    login = await conn.fetchval("SELECT current_user")
    lacking = []
    for table, privileges in TABLE_GRANTS.items():
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            continue  # reported by the tables' and migrations' checks
        for privilege in privileges:
            if not await conn.fetchval("SELECT has_table_privilege($1, $2)", table, privilege):
                lacking.append(f"{privilege} on {table}")
    for (table, column), privilege in COLUMN_GRANTS.items():
        exists = await conn.fetchval("SELECT to_regclass($1)", table)
        if exists and not await conn.fetchval(
            "SELECT has_column_privilege($1, $2, $3)", table, column, privilege
        ):
            lacking.append(f"{privilege} ({column}) on {table}")
    label = f"grants of login {login}"
    if lacking:
        return Check.failed(
            DB,
            label,
            f"lacks {', '.join(lacking)}",
            f"GRANT cleanup_worker TO {login} (docs/database-role.md)",
        )
    return Check.passed(DB, label, "everything the worker's statements need")


async def migrations(conn: Connection) -> Check:
    label = "migrations"
    expected = {m.version: m for m in available_migrations()}
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return Check.failed(DB, label, "none applied", MIGRATE)
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    applied = {row["version"]: row["checksum"] for row in rows}
    missing = sorted(set(expected) - set(applied))
    changed = sorted(v for v in expected if v in applied and applied[v] != expected[v].checksum)
    if missing:
        names = ", ".join(f"{v:04d}" for v in missing)
        return Check.failed(DB, label, f"not applied: {names}", MIGRATE)
    if changed:
        names = ", ".join(f"{v:04d}" for v in changed)
        return Check.failed(
            DB, label, f"applied, then changed: {names}", "restore the shipped migration files"
        )
    newer = sorted(set(applied) - set(expected))
    extra = f" (and {len(newer)} of a newer release)" if newer else ""
    return Check.passed(DB, label, f"all {len(expected)} applied{extra}")


async def clock(conn: Connection) -> Check:
    label = "database clock"
    before = time.time()
    theirs: datetime = await conn.fetchval("SELECT clock_timestamp()")
    after = time.time()
    ours = datetime.fromtimestamp((before + after) / 2, UTC)
    skew = (theirs - ours).total_seconds()
    margin = (after - before) / 2
    detail = f"{skew:+.3f} s from this host's (± {margin:.3f} s)"
    if abs(skew) - margin > MAX_CLOCK_SKEW_S:
        return Check.failed(
            DB,
            label,
            f"{detail}, more than {MAX_CLOCK_SKEW_S:g} s",
            "synchronise both hosts' clocks (NTP/chrony): keys' times come from the database's "
            "clock, the future-skew rule and R6's settle delay from the worker's",
        )
    return Check.passed(DB, label, detail)


async def database_checks(conn: Connection) -> list[Check]:
    return [
        *await contract(conn),
        *await indexes(conn),
        await trigger(conn),
        await grants(conn),
        await migrations(conn),
        await clock(conn),
    ]
