"""What the owner of a mapped key table applies, since `migrate` never alters a table it does not
own (docs/key-table.md): the two indexes the statements need, R4's trigger adapted to the
mapping, and the grants of the worker's and the operators' roles. Printed by
`migrate --print-key-table-sql`, checked by `doctor` (doctor_key_table.py).

The indexes: (account, user, created) serves R1, the R1 re-check's lookups, R6's notes and
`explain`'s keys of a member (not partial: `explain` lists revoked keys too); (created),
partial on the live marker, serves the late-key sweep, which reads only the newest live keys.
The statements write the live marker with the same literals as the index predicate, so the
planner can use it.
"""

from __future__ import annotations

from cleanup_worker.adapters.postgres.key_table import KeyTable
from cleanup_worker.adapters.postgres.quoting import quote_ident, quote_literal

__all__ = ["TRIGGER", "index_name", "owner_sql", "trigger_function"]

TRIGGER = "cleanup_revocation_is_permanent"
WORKER_ROLE = "cleanup_worker"
OPERATOR_ROLE = "cleanup_operator"
_MAX_NAME = 63  # NAMEDATALEN - 1


def _parts(table: KeyTable) -> tuple[str, str]:
    assert table.mapping.table is not None, "our own api_keys is migrate's"
    schema, _, name = table.mapping.table.partition(".")
    return schema, name


def index_name(table: KeyTable, what: str) -> str:
    """The name the printed SQL gives an index ('by_member', 'live_by_created')."""
    _, name = _parts(table)
    suffix = f"_cleanup_{what}"
    return name[: _MAX_NAME - len(suffix)] + suffix


def trigger_function(table: KeyTable) -> str:
    """The trigger's function, qualified and quoted (in the table's schema)."""
    schema, name = _parts(table)
    suffix = "_revocation_is_permanent"
    return f"{quote_ident(schema)}.{quote_ident(name[: _MAX_NAME - len(suffix)] + suffix)}"


def _indexes(table: KeyTable) -> str:
    m = table.mapping
    columns = ", ".join(quote_ident(c) for c in (m.account_column, m.user_column, m.created_column))
    live = table.live("")
    return f"""-- The statements' indexes. CONCURRENTLY: the table stays writable while they build;
-- run each on its own (not in a transaction block).
CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(index_name(table, "by_member"))}
    ON {table.name} ({columns});
CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote_ident(index_name(table, "live_by_created"))}
    ON {table.name} ({quote_ident(m.created_column)})
    WHERE {live};
"""


def _trigger(table: KeyTable) -> str:
    m = table.mapping
    markers = m.marker_columns
    changed = "\n".join(
        f"    IF NEW.{quote_ident(c)} IS DISTINCT FROM OLD.{quote_ident(c)} THEN\n"
        f"        changed := changed || {quote_literal(c)}::text;\n    END IF;"
        for c in markers
    )
    when = "\n            OR ".join(
        f"NEW.{quote_ident(c)} IS DISTINCT FROM OLD.{quote_ident(c)}" for c in markers
    )
    revoked = table.revoked("OLD")
    function = trigger_function(table)
    key_id = f"OLD.{quote_ident(m.id_column)}"
    hint = quote_literal(
        f"Issue a new key instead. Only the table owner or a superuser can bypass this, with "
        f"ALTER TABLE {table.name} DISABLE TRIGGER {TRIGGER}."
    )
    return f"""-- R4, kept by the database: no UPDATE may make a revoked key live again or
-- rewrite its revocation columns, whoever runs it. AFTER: it sees the row as finally
-- written. ALWAYS: it fires under session_replication_role = replica too. SQLSTATE CW001
-- stops the worker.
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $cleanup$
DECLARE
    changed text[] := ARRAY[]::text[];
BEGIN
{changed}
    RAISE EXCEPTION 'api key % is revoked, and a revocation is permanent (R4)', {key_id}
        USING ERRCODE = 'CW001',
              DETAIL = format('The update would change %s.', array_to_string(changed, ', ')),
              HINT = {hint};
END
$cleanup$;

DROP TRIGGER IF EXISTS {TRIGGER} ON {table.name};
CREATE TRIGGER {TRIGGER}
    AFTER UPDATE ON {table.name}
    FOR EACH ROW
    WHEN (
        {revoked}
        AND (
            {when}
        )
    )
    EXECUTE FUNCTION {function}();
ALTER TABLE {table.name} ENABLE ALWAYS TRIGGER {TRIGGER};
"""


def _grants(table: KeyTable) -> str:
    m = table.mapping
    schema, _ = _parts(table)
    read = ", ".join(quote_ident(c) for c in m.columns.values())
    write = ", ".join(quote_ident(c) for c in m.marker_columns)
    return f"""-- The worker (role {WORKER_ROLE}, from `migrate`): read the mapped columns,
-- write the revocation marker, nothing else (no INSERT, no DELETE, no other column). The operators'
-- read-only role ({OPERATOR_ROLE}: explain, report, doctor) reads the mapped columns.
GRANT USAGE ON SCHEMA {quote_ident(schema)} TO {WORKER_ROLE}, {OPERATOR_ROLE};
GRANT SELECT ({read}) ON {table.name} TO {WORKER_ROLE}, {OPERATOR_ROLE};
GRANT UPDATE ({write}) ON {table.name} TO {WORKER_ROLE};
"""


def owner_sql(table: KeyTable) -> str:
    """The whole script for the table's owner, after `cleanup-worker migrate` (which creates
    the roles it grants to)."""
    header = (
        f"-- For the owner of {table.name}: what cleanup-worker needs on a key table it does\n"
        "-- not own (docs/key-table.md). `cleanup-worker doctor` checks each part.\n"
    )
    return "\n".join((header, _indexes(table), _trigger(table), _grants(table)))
