"""The database contract (docs/design.md, "The database contract"): the columns and types of
`api_keys` and `account_memberships` that other services and the worker rely on, and how an
existing table falls short of them."""

from __future__ import annotations

from cleanup_worker.adapters.postgres.connections import Connection

TIMESTAMPTZ = "timestamp with time zone"
CONTRACT: dict[str, dict[str, str]] = {
    "api_keys": {
        "id": "uuid",
        "account_id": "text",
        "iam_id": "text",
        "name": "text",
        "key_hash": "text",
        "created_at": TIMESTAMPTZ,
        "revoked_at": TIMESTAMPTZ,
        "revocation_reason": "text",
        "revoked_by": "text",
    },
    "account_memberships": {
        "account_id": "text",
        "iam_id": "text",
        "state": "text",
        "member_since": TIMESTAMPTZ,
        "changed_at": TIMESTAMPTZ,
    },
}

_COLUMNS = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute AS a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""


async def table_columns(conn: Connection, table: str) -> dict[str, str] | None:
    """The table's columns and their types, or None when there is no such table."""
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return None
    return {row["name"]: row["type"] for row in await conn.fetch(_COLUMNS, table)}


def shortfall(table: str, columns: dict[str, str]) -> list[str]:
    """What the contract needs that `columns` lacks: 'name type' or 'name type (is other)'."""
    missing = []
    for name, wanted in CONTRACT[table].items():
        found = columns.get(name)
        if found is None:
            missing.append(f"{name} {wanted}")
        elif found != wanted:
            missing.append(f"{name} {wanted} (is {found})")
    return missing


async def contract_shortfalls(conn: Connection) -> dict[str, list[str]]:
    """For each contract table that exists, what it lacks (an absent table lacks nothing:
    `migrate` creates it)."""
    found = {}
    for table in CONTRACT:
        columns = await table_columns(conn, table)
        if columns is not None and (missing := shortfall(table, columns)):
            found[table] = missing
    return found
