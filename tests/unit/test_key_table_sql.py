"""The key table as SQL: identifiers quoted as given, values compared in the column's own type,
and the revocation marker of each kind (docs/key-table.md)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup_worker.adapters.postgres import keys
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from cleanup_worker.adapters.postgres.key_table import DEFAULT, KeyTable
from cleanup_worker.adapters.postgres.quoting import quote_ident, quote_literal, quote_qualified
from cleanup_worker.domain.key_table import KeyTableMapping, value_fits

STATE_ONLY = KeyTableMapping(
    table="keysvc.ApiKeys",
    id_column="keyId",
    account_column="tenantId",
    user_column="userId",
    created_column="createdAt",
    revoked_at_column=None,
    state_column="status",
    live_states=("active", "rotating"),
    revoked_state="revoked",
    reason_column=None,
    revoked_by_column=None,
)
TYPES = (
    ("keyId", "bigint"),
    ("tenantId", "uuid"),
    ("userId", "text"),
    ("createdAt", "timestamp without time zone"),
    ("status", "text"),
)
MAPPED = KeyTable(STATE_ONLY, TYPES)
BOTH = KeyTable(
    dataclasses.replace(STATE_ONLY, revoked_at_column="revokedAt"),
    (*TYPES, ("revokedAt", "timestamp with time zone")),
)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("id", "id"),
        ("account_id", "account_id"),
        ("ApiKeys", '"ApiKeys"'),
        ("user", '"user"'),
        ("order", '"order"'),
        ('we"ird', '"we""ird"'),
        ("1st", '"1st"'),
        ("with space", '"with space"'),
    ],
)
def test_identifiers_are_quoted_only_where_postgresql_needs_it(name: str, quoted: str) -> None:
    """Plain lower-case names stay bare; camelCase, keywords and odd characters are quoted."""
    assert quote_ident(name) == quoted


@given(st.text(alphabet=st.characters(blacklist_characters="\x00"), min_size=1))
def test_a_quoted_identifier_reads_back_as_the_name(name: str) -> None:
    """Undoing the quoting gives the name back: nothing escapes the double quotes."""
    quoted = quote_ident(name)
    if quoted.startswith('"'):
        assert quoted.endswith('"')
        assert quoted[1:-1].replace('""', '"') == name
        assert '"' not in quoted[1:-1].replace('""', "")
    else:
        assert quoted == name


def test_a_schema_qualified_table_is_quoted_part_by_part() -> None:
    """keysvc.ApiKeys is keysvc."ApiKeys", not one name with a dot."""
    assert quote_qualified("keysvc.ApiKeys") == 'keysvc."ApiKeys"'


def test_literals_double_their_quotes() -> None:
    """A state value with a quote cannot end its literal."""
    assert quote_literal("it's") == "'it''s'"


def test_a_nul_character_is_refused() -> None:
    """PostgreSQL cannot hold NUL in a name; refusing it beats a confusing server error."""
    with pytest.raises(ValueError, match="NUL"):
        quote_ident("a\x00b")


def test_our_api_keys_marker_is_revoked_at() -> None:
    """The default mapping: live is revoked_at IS NULL, and a revocation writes all three."""
    assert DEFAULT.live("k") == "k.revoked_at IS NULL"
    assert DEFAULT.revoked("k") == "k.revoked_at IS NOT NULL"
    assert DEFAULT.revoke_set("'r'", "$2") == (
        "revoked_at = now(), revocation_reason = 'r', revoked_by = $2"
    )
    assert not DEFAULT.audited_apart


def test_a_state_marker_names_its_live_states_and_writes_the_revoked_one() -> None:
    """State only: live is IN (live states), revoked is = revoked state, any other is neither."""
    assert MAPPED.live("k") == "k.status IN ('active', 'rotating')"
    assert MAPPED.revoked("k") == "k.status = 'revoked'"
    assert MAPPED.revoke_set("'r'", "$2") == "status = 'revoked'"
    assert MAPPED.audited_apart


def test_both_markers_are_read_and_written_together() -> None:
    """Both: live needs both, revoked is either, and a revocation writes both."""
    assert BOTH.live("k") == "k.\"revokedAt\" IS NULL AND k.status IN ('active', 'rotating')"
    assert BOTH.revoked("k") == "(k.\"revokedAt\" IS NOT NULL OR k.status = 'revoked')"
    assert BOTH.revoke_set("'r'", "$2") == "\"revokedAt\" = now(), status = 'revoked'"


def test_bound_values_are_cast_to_the_columns_type_never_the_column() -> None:
    """A bigint id and a uuid account are compared as such; a text user as text."""
    assert MAPPED.typed_array("$1", "keyId") == "CAST($1::text[] AS bigint[])"
    assert MAPPED.typed("r.account_id", "tenantId") == "CAST(r.account_id AS uuid)"
    assert MAPPED.typed("r.iam_id", "userId") == "r.iam_id"
    assert MAPPED.to_created("$1::timestamptz") == (
        "CAST($1::timestamptz AS timestamp without time zone)"
    )
    assert MAPPED.as_text('k."keyId"', "keyId") == 'k."keyId"::text'


def test_r1_on_a_mapped_table_casts_the_events_and_records_its_audit() -> None:
    """The mapped R1 joins on typed ids, tests the state marker, and writes key_revocations."""
    sql = keys.r1_statement(MAPPED, announce=False, note_late_keys=False)
    assert 'UPDATE keysvc."ApiKeys" AS k' in sql
    assert "CAST(r.account_id AS uuid) AS account_id" in sql
    assert "k.status IN ('active', 'rotating')" in sql
    assert "INSERT INTO key_revocations" in sql
    assert "revoked_at" not in sql.split("RETURNING")[0]


def test_r1_on_our_api_keys_writes_no_audit_row() -> None:
    """Our own table records reason and revoked_by itself: no key_revocations on that path."""
    for announce in (False, True):
        sql = keys.r1_statement(DEFAULT, announce=announce, note_late_keys=True)
        assert "key_revocations" not in sql
        assert "SELECT * FROM json_to_recordset" in sql
    assert "key_revocations" not in keys.r5_statement(
        DEFAULT, MembershipSource.TABLE, announce=True
    )


@pytest.mark.parametrize(
    ("column_type", "value", "fits"),
    [
        ("bigint", "12345", True),
        ("bigint", "9223372036854775807", True),
        ("bigint", "9223372036854775808", False),
        ("integer", "2147483648", False),
        ("bigint", "tenant-x", False),
        ("uuid", "7d0c5f3e-3a0b-4c3e-9f4e-2b1d8f6a9c10", True),
        ("uuid", "acct", False),
        ("text", "anything at all", True),
        ("character varying(64)", "x", True),
        ("numeric(20,0)", "42", True),
    ],
)
def test_an_event_id_that_the_column_cannot_hold_matches_no_key(
    column_type: str, value: str, fits: bool
) -> None:
    """Ids are checked before they are cast, so a text account never fails a bigint cast."""
    assert value_fits(column_type, value) is fits


def test_stored_ids_are_cast_only_when_they_have_the_types_form() -> None:
    """Text from our tables becomes a bigint only when it looks like one; else null."""
    assert MAPPED.typed_stored("c.key_id", "keyId") == (
        "CASE WHEN c.key_id ~ '^-?[0-9]{1,19}$' THEN CAST(c.key_id AS bigint) END"
    )
    assert MAPPED.typed_stored("c.x", "userId") == "c.x"
