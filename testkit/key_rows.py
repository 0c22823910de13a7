"""The rows of the active key table (testkit/key_tables.py): made, read and reset for the
suites, in the table's own types, whatever its shape."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from datetime import datetime
from typing import Any

import asyncpg

from testkit.key_tables import AUDIT_TABLE, OWNER, KeyTableShape, active, print_command, quote

_printed: dict[str, str] = {}  # shape name -> the owner's SQL `migrate` printed for it


async def ensure_owner_role(db: Any) -> None:
    """The key service's role (cluster-wide, NOLOGIN): it owns the mapped tables."""
    # UniqueViolation: another session created it at the same moment.
    with contextlib.suppress(asyncpg.UniqueViolationError):
        await db.execute(
            f"DO $$ BEGIN CREATE ROLE {OWNER} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )


async def create_table(db: Any, shape: KeyTableShape) -> None:
    """The mapped table as its key service would have it: made and owned by `OWNER`."""
    if shape.native:
        return
    await ensure_owner_role(db)
    assert shape.schema is not None
    async with db.transaction():
        await db.execute(f"CREATE SCHEMA {quote(shape.schema)} AUTHORIZATION {OWNER}")
        await db.execute(f"SET LOCAL ROLE {OWNER}")
        for statement in shape.ddl:
            await db.execute(statement)


async def owner_sql(shape: KeyTableShape, database_url: str) -> str:
    """What `cleanup-worker migrate --print-key-table-sql` prints for this mapping (the
    indexes, R4's trigger, the grants), asked once per shape and session."""
    if shape.name not in _printed:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CLEANUP_DATABASE_URL": database_url,
            "CLEANUP_LOG_FORMAT": "json",
            **shape.env(),
        }
        process = await asyncio.create_subprocess_exec(
            *print_command(),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, f"--print-key-table-sql: {err.decode()[-1500:]}"
        _printed[shape.name] = out.decode()
    return _printed[shape.name]


async def apply_owner_sql(db: Any, shape: KeyTableShape, database_url: str) -> None:
    """Applies the printed SQL as the table's owner would with psql: statement by statement,
    outside a transaction block (its indexes are built CONCURRENTLY), as `OWNER`."""
    sql = await owner_sql(shape, database_url)
    await db.execute(f"SET ROLE {OWNER}")
    try:
        for statement in statements(sql):
            await db.execute(statement)
    finally:
        await db.execute("RESET ROLE")


_TOKENS = re.compile(r"--[^\n]*|'(?:[^']|'')*'|(\$[A-Za-z_0-9]*\$)|;")


def statements(script: str) -> list[str]:
    """A SQL script split into its statements, as psql splits it: at semicolons outside
    comments, quoted strings and dollar-quoted bodies."""
    found, start, position = [], 0, 0
    while match := _TOKENS.search(script, position):
        position = match.end()
        if match.group(1):  # a dollar quote: skip to its closing tag
            position = script.index(match.group(1), position) + len(match.group(1))
        elif match.group(0) == ";":
            found.append(script[start : match.start()])
            start = position
    found.append(script[start:])
    return [s.strip() for s in found if _TOKENS.sub("", s).strip()]


async def install(db: Any, shape: KeyTableShape, database_url: str) -> None:
    """The table created by its owner and readied with the printed SQL (nothing for ours)."""
    if shape.native:
        return
    await create_table(db, shape)
    await apply_owner_sql(db, shape, database_url)


def _revoked_condition(shape: KeyTableShape) -> str:
    marks = []
    if shape.revoked_at:
        marks.append(f"{quote(shape.revoked_at)} IS NOT NULL")
    if shape.state:
        marks.append(f"{quote(shape.state)} = '{shape.revoked_state}'")
    return " OR ".join(marks)


def _insert_sql(shape: KeyTableShape, *, created: bool, state: bool) -> str:
    columns = [shape.account.sql, shape.user.sql]
    if created:
        columns.append(quote(shape.created))
    if state:
        assert shape.state is not None, f"{shape.name} has no state column"
        columns.append(quote(shape.state))
    params = [f"${i}" for i in range(1, len(columns) + 1)]
    columns += [quote(c) for c in shape.extra_insert]
    params += list(shape.extra_insert.values())
    return (
        f"INSERT INTO {shape.qualified} ({', '.join(columns)}) "
        f"VALUES ({', '.join(params)}) RETURNING {shape.id.sql}"
    )


async def insert_key(
    db: Any,
    account_id: str,
    iam_id: str,
    created_at: datetime | None,
    *,
    state: str | None = None,
    shape: KeyTableShape | None = None,
) -> Any:
    """Inserts one key of (account, user) as the event texts give them; its id, in the
    table's own type. `created_at` None: the column's default (the transaction's start);
    `state`: a state of the table's state column (its first live state otherwise)."""
    shape = shape or active()
    values: list[Any] = [shape.bind(shape.account, account_id), shape.bind(shape.user, iam_id)]
    if created_at is not None:
        values.append(created_at)
    if state is not None:
        values.append(state)
    sql = _insert_sql(shape, created=created_at is not None, state=state is not None)
    return await db.fetchval(sql, *values)


async def insert_keys(db: Any, keys: list[tuple[str, str, datetime]]) -> None:
    """Many keys (account, user, created_at) at once."""
    shape = active()
    await db.executemany(
        _insert_sql(shape, created=True, state=False),
        [(shape.bind(shape.account, a), shape.bind(shape.user, u), t) for a, u, t in keys],
    )


async def revocations(db: Any) -> dict[Any, tuple[str, str]]:
    """Each revoked key's (reason, revoked_by): from the table's own columns, or else from
    the worker's audit table (the one reader of either)."""
    shape = active()
    revoked = _revoked_condition(shape)
    if shape.reason and shape.revoked_by:
        rows = await db.fetch(
            f"SELECT {shape.id.sql} AS id, {quote(shape.reason)} AS reason, "
            f"{quote(shape.revoked_by)} AS revoked_by FROM {shape.qualified} WHERE {revoked}"
        )
    else:
        rows = await db.fetch(
            f"SELECT k.{shape.id.sql} AS id, a.reason, a.revoked_by FROM {shape.qualified} AS k "
            f"LEFT JOIN {AUDIT_TABLE} AS a ON a.key_id = k.{shape.id.sql}::text WHERE {revoked}"
        )
    return {row["id"]: (row["reason"], row["revoked_by"]) for row in rows}


async def key_states(db: Any) -> dict[Any, str]:
    """Every key's state: 'live', 'revoked', the table's other state ('expired'), or
    'half-revoked' when a table with both markers has only one of them set."""
    shape = active()
    marks = []
    if shape.revoked_at:
        marks.append(f"{quote(shape.revoked_at)} IS NOT NULL")
    if shape.state:
        marks.append(f"{quote(shape.state)} = '{shape.revoked_state}'")
    other = "false"
    if shape.state and shape.other_state:
        other = f"{quote(shape.state)} = '{shape.other_state}'"
    rows = await db.fetch(
        f"SELECT {shape.id.sql} AS id, ARRAY[{', '.join(marks)}] AS marks, {other} AS other "
        f"FROM {shape.qualified}"
    )
    states: dict[Any, str] = {}
    for row in rows:
        if all(row["marks"]):
            states[row["id"]] = "revoked"
        elif any(row["marks"]):
            states[row["id"]] = "half-revoked"
        else:
            states[row["id"]] = shape.other_state if row["other"] and shape.other_state else "live"
    return states


async def all_columns(db: Any) -> list[tuple[Any, ...]]:
    """Every column of every key, in id order: to show that something changed none."""
    shape = active()
    rows = await db.fetch(f"SELECT * FROM {shape.qualified} ORDER BY {shape.id.sql}")
    return [tuple(row.values()) for row in rows]


async def live_count(db: Any) -> int:
    shape = active()
    live = f"NOT ({_revoked_condition(shape)})"
    if shape.state:
        states = ", ".join(f"'{s}'" for s in shape.live_states)
        live = f"{live} AND {quote(shape.state)} IN ({states})"
    count: int = await db.fetchval(f"SELECT count(*) FROM {shape.qualified} WHERE {live}")
    return count


async def unrevoke_all(db: Any) -> None:
    """What a restored backup does to revocations: every revoked key live again, its reason
    and revoked_by gone. R4's trigger refuses that from anyone, so the table's own triggers
    are switched off in the same transaction and back on as they were."""
    shape = active()
    sets = []
    if shape.revoked_at:
        sets.append(f"{quote(shape.revoked_at)} = NULL")
    if shape.state:
        sets.append(f"{quote(shape.state)} = '{shape.live_states[0]}'")
    for column in (shape.reason, shape.revoked_by):
        if column:
            sets.append(f"{quote(column)} = NULL")
    async with db.transaction():
        triggers = await db.fetch(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = $1::regclass "
            "AND NOT tgisinternal",
            shape.qualified,
        )
        await db.execute(f"ALTER TABLE {shape.qualified} DISABLE TRIGGER USER")
        await db.execute(
            f"UPDATE {shape.qualified} SET {', '.join(sets)} WHERE {_revoked_condition(shape)}"
        )
        if not (shape.reason and shape.revoked_by):
            await db.execute(f"DELETE FROM {AUDIT_TABLE}")
        enable = {b"A": "ENABLE ALWAYS", b"O": "ENABLE", b"R": "ENABLE REPLICA", b"D": "DISABLE"}
        for trigger in triggers:
            await db.execute(
                f"ALTER TABLE {shape.qualified} {enable[trigger['tgenabled']]} "
                f"TRIGGER {quote(trigger['tgname'])}"
            )


async def owners(db: Any) -> dict[Any, tuple[str, str]]:
    """Each key's (account, user) as text, as an event and a notice carry them."""
    shape = active()
    rows = await db.fetch(
        f"SELECT {shape.id.sql} AS id, {shape.account.sql}::text AS account, "
        f"{shape.user.sql}::text AS user FROM {shape.qualified}"
    )
    return {row["id"]: (row["account"], row["user"]) for row in rows}


async def created_of(db: Any, key_id: Any) -> datetime:
    """The key's created column, as the table holds it."""
    shape = active()
    created: datetime = await db.fetchval(
        f"SELECT {quote(shape.created)} FROM {shape.qualified} WHERE {shape.id.sql} = $1", key_id
    )
    return created
