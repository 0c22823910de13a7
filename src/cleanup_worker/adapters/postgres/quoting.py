"""Identifiers and literals written into SQL text, quoted as PostgreSQL's `quote_ident` and
`quote_literal` do. asyncpg binds values but has no identifier quoting; the key table's names
(docs/key-table.md) are the only identifiers that come from configuration."""

from __future__ import annotations

import re

__all__ = ["quote_ident", "quote_literal", "quote_qualified"]

_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")

# Every keyword that is not "unreserved" (pg_get_keywords() of PostgreSQL 15, catcode <> 'U'):
# such a name must be quoted as a column or table name.
_KEYWORDS = frozenset(
    """all analyse analyze and any array as asc asymmetric authorization between bigint binary
    bit boolean both case cast char character check coalesce collate collation column
    concurrently constraint create cross current_catalog current_date current_role
    current_schema current_time current_timestamp current_user dec decimal default
    deferrable desc distinct do else end except exists extract false fetch float for foreign
    freeze from full grant greatest group grouping having ilike in initially inner inout int
    integer intersect interval into is isnull join lateral leading least left like limit
    localtime localtimestamp national natural nchar none normalize not notnull null nullif
    numeric offset on only or order out outer overlaps overlay placing position precision
    primary real references returning right row select session_user setof similar smallint
    some substring symmetric table tablesample then time timestamp to trailing treat trim
    true union unique user using values varchar variadic verbose when where window with
    xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi
    xmlroot xmlserialize xmltable""".split()  # noqa: SIM905 - a list to compare with the server's
)


def quote_ident(name: str) -> str:
    """`name` as an SQL identifier: bare when PostgreSQL would read it back unchanged, else in
    double quotes with inner quotes doubled (camelCase, spaces, keywords)."""
    if "\x00" in name:
        raise ValueError("an identifier cannot hold a NUL character")
    if _PLAIN.fullmatch(name) and name not in _KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(name: str) -> str:
    """'schema.table' as a qualified identifier, each part quoted as given."""
    schema, _, table = name.partition(".")
    return f"{quote_ident(schema)}.{quote_ident(table)}" if table else quote_ident(schema)


def quote_literal(value: str) -> str:
    """`value` as an SQL string literal (standard_conforming_strings, on since PostgreSQL 9.1)."""
    if "\x00" in value:
        raise ValueError("a literal cannot hold a NUL character")
    return "'" + value.replace("'", "''") + "'"
