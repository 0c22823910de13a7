"""`doctor`'s checks of a mapped key table (docs/key-table.md): the mapping against the catalog,
the two indexes the statements need, R4's trigger enabled ALWAYS, and the login's rights on
the table: SELECT on the mapped columns, UPDATE on the marker columns, and nothing else.
Each failure says what to run: `cleanup-worker migrate --print-key-table-sql` prints it."""

from __future__ import annotations

from cleanup_worker.adapters.postgres import key_table
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.key_table_owner import TRIGGER
from cleanup_worker.domain.checks import Check
from cleanup_worker.domain.key_table import KeyTableMapping
from cleanup_worker.errors import ConfigurationError

DB = "database"
PRINT = (
    "have the table's owner apply `cleanup-worker migrate --print-key-table-sql` "
    "(docs/key-table.md)"
)

# Every valid index of the table with its key columns, in order.
_INDEXES = """
SELECT i.indisvalid AND i.indisready AS valid,
       array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS c(attnum, n)
             JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = c.attnum
             ORDER BY c.n)::text[] AS columns
FROM pg_index AS i
WHERE i.indrelid = $1::regclass
"""
_TRIGGER = "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2"
_SUPERUSER = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"


async def key_table_checks(conn: Connection, mapping: KeyTableMapping) -> list[Check]:
    """Nothing for our own api_keys (the other checks cover it)."""
    if mapping.is_default:
        return []
    label = f"key table {mapping.table}"
    try:
        table = await key_table.load(conn, mapping)
    except ConfigurationError as exc:
        return [Check.failed(DB, label, str(exc), "correct the CLEANUP_KEYS_* setting it names")]
    return [
        Check.passed(DB, label, "mapped columns present, of usable types"),
        *await _indexes(conn, table),
        await _trigger(conn, table),
        await _rights(conn, table),
    ]


async def _indexes(conn: Connection, table: KeyTable) -> list[Check]:
    m = table.mapping
    rows = await conn.fetch(_INDEXES, table.name)
    needed = {
        "by member": ([m.account_column, m.user_column, m.created_column], "R1 and explain"),
        "by created": ([m.created_column], "the late-key sweep"),
    }
    checks = []
    for what, (columns, why) in needed.items():
        label = f"index of {m.table} {what}"
        found = [row for row in rows if list(row["columns"][: len(columns)]) == columns]
        if any(row["valid"] for row in found):
            checks.append(Check.passed(DB, label, f"valid ({why})"))
        elif found:
            checks.append(
                Check.failed(DB, label, "invalid (a failed CREATE INDEX CONCURRENTLY)", PRINT)
            )
        else:
            cols = ", ".join(columns)
            checks.append(Check.failed(DB, label, f"missing: none leads with ({cols})", PRINT))
    return checks


async def _trigger(conn: Connection, table: KeyTable) -> Check:
    label = f"trigger {TRIGGER} on {table.mapping.table} (R4)"
    state = await conn.fetchval(_TRIGGER, table.name, TRIGGER)
    if state is None:
        return Check.failed(DB, label, "missing: revoked keys could be un-revoked", PRINT)
    if state != "A":
        return Check.failed(
            DB, label, "not enabled ALWAYS: revoked keys could be un-revoked", PRINT
        )
    return Check.passed(DB, label, "enabled ALWAYS")


async def _column_right(conn: Connection, table: KeyTable, column: str, right: str) -> bool:
    allowed: bool = await conn.fetchval(
        "SELECT has_column_privilege($1, $2, $3)", table.name, column, right
    )
    return allowed


async def _rights(conn: Connection, table: KeyTable) -> Check:
    m = table.mapping
    login = await conn.fetchval("SELECT current_user")
    label = f"rights of login {login} on {m.table}"
    if await conn.fetchval(_SUPERUSER):
        return Check.passed(DB, label, "a superuser (run the worker as a least-privilege login)")
    lacking = [
        f"SELECT ({c})"
        for c in m.columns.values()
        if not await _column_right(conn, table, c, "SELECT")
    ]
    lacking += [
        f"UPDATE ({c})"
        for c in m.marker_columns
        if not await _column_right(conn, table, c, "UPDATE")
    ]
    every = [
        row["attname"]
        for row in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0"
            " AND NOT attisdropped",
            table.name,
        )
    ]
    extra = [
        f"UPDATE ({c})"
        for c in every
        if c not in m.marker_columns and await _column_right(conn, table, c, "UPDATE")
    ]
    for right in ("INSERT", "DELETE", "TRUNCATE"):
        if await conn.fetchval("SELECT has_table_privilege($1, $2)", table.name, right):
            extra.append(right)
    if lacking:
        return Check.failed(DB, label, f"lacks {', '.join(lacking)}", PRINT)
    if extra:
        return Check.failed(
            DB,
            label,
            f"may also {', '.join(extra)}: more than revoking needs",
            f"REVOKE those from {login} and the roles it belongs to; grant only what "
            "`cleanup-worker migrate --print-key-table-sql` prints",
        )
    return Check.passed(DB, label, "SELECT on the mapped columns, UPDATE on the marker only")
