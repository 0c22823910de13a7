"""The key table as SQL: the parts every statement that reads or revokes keys is built from
("Key table mapping", docs/design.md).

A `KeyTable` is a mapping (domain/key_table.py) with the types the catalog reports for its
columns. Identifiers are quoted as given; values are bound, and compared in the column's own
type (a bound value is cast to it, never the column), so the table's indexes serve. The live
and revoked states are configuration, not input: they are written as quoted literals, so that
the planner can match a partial index on the live marker (a bound parameter cannot prove an
index predicate).

Our own `api_keys` is `DEFAULT`: the same builder, so there is one path. The composition root
reads the catalog once at start (`load`) and installs the table (`use`) before any statement
runs; the statement modules read it through `current()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.quoting import quote_ident, quote_literal, quote_qualified
from cleanup_worker.domain.key_table import (
    DEFAULT_TABLE,
    KeyTableMapping,
    catalog_problems,
    value_fits,
)
from cleanup_worker.errors import ConfigurationError

__all__ = ["AUDIT_TABLE", "DEFAULT", "KeyTable", "current", "load", "read_column_types", "use"]

# Ours (migration 0013): when, why and by whom, for a table without columns for them.
AUDIT_TABLE = "key_revocations"

_TIMESTAMPTZ = "timestamp with time zone"
_TEXT_TYPES = frozenset({"text"})
# How PostgreSQL prints a value of each type as text (`k.id::text`): what our tables hold.
_STORED_FORMS = {
    "smallint": "^-?[0-9]{1,5}$",
    "integer": "^-?[0-9]{1,10}$",
    "bigint": "^-?[0-9]{1,19}$",
    "uuid": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}


@dataclass(frozen=True, slots=True)
class KeyTable:
    """A mapping and the `format_type` of each mapped column."""

    mapping: KeyTableMapping
    types: tuple[tuple[str, str], ...] = field(default=())

    # -- names -------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The table, quoted (ours: unqualified, found through the search_path)."""
        table = self.mapping.table
        return DEFAULT_TABLE if table is None else quote_qualified(table)

    def type_of(self, column: str) -> str:
        return dict(self.types)[column]

    def col(self, alias: str, column: str) -> str:
        """`column` of `alias`, quoted ('' for the bare column: an index predicate)."""
        return f"{alias}.{quote_ident(column)}" if alias else quote_ident(column)

    def id(self, alias: str = "k") -> str:
        return self.col(alias, self.mapping.id_column)

    def account(self, alias: str = "k") -> str:
        return self.col(alias, self.mapping.account_column)

    def user(self, alias: str = "k") -> str:
        return self.col(alias, self.mapping.user_column)

    def created(self, alias: str = "k") -> str:
        return self.col(alias, self.mapping.created_column)

    # -- types -------------------------------------------------------------------------------

    def as_text(self, expr: str, column: str) -> str:
        """`expr`, a value of `column`, as text (ids in our tables and notices are text)."""
        return expr if self.type_of(column) in _TEXT_TYPES else f"{expr}::text"

    def typed(self, expr: str, column: str) -> str:
        """`expr`, a text value, in `column`'s own type: the column side stays bare."""
        kind = self.type_of(column)
        return expr if kind in _TEXT_TYPES else f"CAST({expr} AS {kind})"

    def typed_stored(self, expr: str, column: str) -> str:
        """`expr`, an id as our tables store it (text), in `column`'s type; null where the text
        is not of that type's form (a row left by an earlier mapping), never a cast error."""
        kind = self.type_of(column)
        pattern = _STORED_FORMS.get(kind.split("(", 1)[0])
        if pattern is None:
            return self.typed(expr, column)
        return f"CASE WHEN {expr} ~ {quote_literal(pattern)} THEN CAST({expr} AS {kind}) END"

    def typed_array(self, param: str, column: str) -> str:
        """A bound text[] parameter as an array of `column`'s type (for `= ANY(...)`)."""
        kind = self.type_of(column)
        return f"{param}::text[]" if kind in _TEXT_TYPES else f"CAST({param}::text[] AS {kind}[])"

    def as_timestamptz(self, expr: str, column: str) -> str:
        return expr if self.type_of(column) == _TIMESTAMPTZ else f"{expr}::timestamptz"

    def to_created(self, expr: str) -> str:
        """A timestamptz `expr` in the created column's type, for comparisons with it."""
        kind = self.type_of(self.mapping.created_column)
        return expr if kind == _TIMESTAMPTZ else f"CAST({expr} AS {kind})"

    def fits(self, column: str, values: Sequence[str]) -> list[bool]:
        """For each value, whether `column` can hold it (one that cannot matches no key)."""
        kind = self.type_of(column)
        if kind in _TEXT_TYPES:  # our own api_keys: nothing to check on the batch's path
            return [True] * len(values)
        return [value_fits(kind, value) for value in values]

    # -- the marker --------------------------------------------------------------------------

    def live(self, alias: str = "k") -> str:
        """The predicate of a live key."""
        m = self.mapping
        parts = []
        if m.revoked_at_column is not None:
            parts.append(f"{self.col(alias, m.revoked_at_column)} IS NULL")
        if m.state_column is not None:
            states = ", ".join(quote_literal(s) for s in m.live_states)
            parts.append(f"{self.col(alias, m.state_column)} IN ({states})")
        return " AND ".join(parts)

    def revoked(self, alias: str = "k") -> str:
        """The predicate of a revoked key (neither it nor `live`: another state, left alone)."""
        m = self.mapping
        parts = []
        if m.revoked_at_column is not None:
            parts.append(f"{self.col(alias, m.revoked_at_column)} IS NOT NULL")
        if m.state_column is not None and m.revoked_state is not None:
            parts.append(f"{self.col(alias, m.state_column)} = {quote_literal(m.revoked_state)}")
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def revoke_set(self, reason: str, revoked_by: str) -> str:
        """The SET list of a revocation: the marker, and reason and revoked_by where mapped."""
        m = self.mapping
        sets = []
        if m.revoked_at_column is not None:
            sets.append(f"{quote_ident(m.revoked_at_column)} = now()")
        if m.state_column is not None and m.revoked_state is not None:
            sets.append(f"{quote_ident(m.state_column)} = {quote_literal(m.revoked_state)}")
        if m.reason_column is not None:
            sets.append(f"{quote_ident(m.reason_column)} = {reason}")
        if m.revoked_by_column is not None:
            sets.append(f"{quote_ident(m.revoked_by_column)} = {revoked_by}")
        return ", ".join(sets)

    # -- the audit: in the table, or in ours -------------------------------------------------

    @property
    def audited_apart(self) -> bool:
        """Whether our `key_revocations` records when, why and by whom (the table cannot)."""
        return not self.mapping.audit_in_table

    def audit_join(self, alias: str = "k", audit: str = "a") -> str:
        """The LEFT JOIN that reads the audit of `alias`'s key ('' when it is in the table)."""
        if not self.audited_apart:
            return ""
        key_id = self.as_text(self.id(alias), self.mapping.id_column)
        return f"LEFT JOIN {AUDIT_TABLE} AS {audit} ON {audit}.key_id = {key_id}"

    def revoked_at(self, alias: str = "k", audit: str = "a") -> str:
        m = self.mapping
        if not self.audited_apart and m.revoked_at_column is not None:
            return self.as_timestamptz(self.col(alias, m.revoked_at_column), m.revoked_at_column)
        return f"{audit}.revoked_at"

    def reason(self, alias: str = "k", audit: str = "a") -> str:
        m = self.mapping
        if not self.audited_apart and m.reason_column is not None:
            return self.col(alias, m.reason_column)
        return f"{audit}.reason"

    def revoked_by(self, alias: str = "k", audit: str = "a") -> str:
        m = self.mapping
        if not self.audited_apart and m.revoked_by_column is not None:
            return self.col(alias, m.revoked_by_column)
        return f"{audit}.revoked_by"

    def returning(self, reason: str, revoked_by: str, event_time: str) -> str:
        """What a revoking UPDATE returns for the outbox and the audit, under the names they
        read. `reason`, `revoked_by`: the values the statement revokes with."""
        m = self.mapping
        return (
            f"{self.as_text(self.id(), m.id_column)} AS id, "
            f"{self.as_text(self.account(), m.account_column)} AS account_id, "
            f"{self.as_text(self.user(), m.user_column)} AS iam_id, "
            f"{reason} AS revocation_reason, now() AS revoked_at, {revoked_by} AS revoked_by, "
            f"{event_time} AS event_time"
        )


# Our own api_keys (migration 0001): known without reading the catalog.
DEFAULT = KeyTable(
    KeyTableMapping(),
    types=(
        ("id", "uuid"),
        ("account_id", "text"),
        ("iam_id", "text"),
        ("created_at", _TIMESTAMPTZ),
        ("revoked_at", _TIMESTAMPTZ),
        ("revocation_reason", "text"),
        ("revoked_by", "text"),
    ),
)

_current: list[KeyTable] = [DEFAULT]


def use(table: KeyTable) -> None:
    """Installs the key table every statement is built for (the composition root, at start)."""
    _current[0] = table


def current() -> KeyTable:
    return _current[0]


_COLUMNS = """
SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute AS a
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
"""


async def read_column_types(conn: Connection, table: str) -> dict[str, str] | None:
    """Every column of `table` (as `KeyTable.name` writes it) with its type; None when there
    is no such table (or the login may not see it)."""
    if await conn.fetchval("SELECT to_regclass($1)", table) is None:
        return None
    return {row["name"]: row["type"] for row in await conn.fetch(_COLUMNS, table)}


async def load(conn: Connection, mapping: KeyTableMapping) -> KeyTable:
    """The mapping checked against the catalog: raises ConfigurationError naming the setting
    when the table or a column is missing or of an unusable type."""
    if mapping.is_default:
        return DEFAULT
    name = KeyTable(mapping).name
    found = await read_column_types(conn, name)
    if found is None:
        raise ConfigurationError(
            f"CLEANUP_KEYS_TABLE: no table {mapping.table} (or this login may not read it)"
        )
    problems = catalog_problems(mapping, found)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigurationError(problems[0] + more)
    columns = mapping.columns.values()
    return KeyTable(mapping, types=tuple((c, found[c]) for c in columns))
