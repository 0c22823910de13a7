"""The key table mapping: its settings' coherence and the catalog's types, one line per setting."""

from __future__ import annotations

import dataclasses

import pytest

from cleanup_worker.domain.key_table import KeyTableMapping, catalog_problems, settings_problem
from cleanup_worker.errors import ConfigurationError
from cleanup_worker.settings import load_settings
from testkit.key_tables import KEYSVC_STATE_ONLY as STATE_ONLY

DB = "postgresql://u:pw@127.0.0.1:5432/db"


OUR_TYPES = {
    "id": "uuid",
    "account_id": "text",
    "iam_id": "text",
    "created_at": "timestamp with time zone",
    "revoked_at": "timestamp with time zone",
    "revocation_reason": "text",
    "revoked_by": "text",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("CLEANUP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")
    monkeypatch.setenv("CLEANUP_DATABASE_URL", DB)


def test_defaults_describe_our_api_keys() -> None:
    """Without CLEANUP_KEYS_* settings the mapping is our api_keys, audited in the table."""
    mapping = load_settings().key_table
    assert mapping == KeyTableMapping()
    assert mapping.is_default
    assert mapping.audit_in_table


def test_a_state_only_mapping_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An empty optional column setting means the table has no such column."""
    for name, value in {
        "TABLE": "keysvc.ApiKeys",
        "ID_COLUMN": "keyId",
        "ACCOUNT_COLUMN": "tenantId",
        "USER_COLUMN": "userId",
        "CREATED_COLUMN": "createdAt",
        "REVOKED_AT_COLUMN": "",
        "STATE_COLUMN": "status",
        "LIVE_STATES": "active",
        "REVOKED_STATE": "revoked",
        "REASON_COLUMN": "",
        "REVOKED_BY_COLUMN": "",
    }.items():
        monkeypatch.setenv(f"CLEANUP_KEYS_{name}", value)
    assert load_settings().key_table == STATE_ONLY


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"table": "ApiKeys"}, "CLEANUP_KEYS_TABLE"),
        ({"table": "a.b.c"}, "CLEANUP_KEYS_TABLE"),
        ({"table": None}, "CLEANUP_KEYS_TABLE"),
        ({"state_column": None}, "CLEANUP_KEYS_REVOKED_AT_COLUMN"),
        ({"revoked_state": None}, "CLEANUP_KEYS_REVOKED_STATE"),
        ({"live_states": ()}, "CLEANUP_KEYS_LIVE_STATES"),
        ({"live_states": ("active", "revoked")}, "CLEANUP_KEYS_REVOKED_STATE"),
        ({"user_column": "tenantId"}, "CLEANUP_KEYS_USER_COLUMN"),
        ({"state_column": None, "revoked_at_column": "revokedAt"}, "CLEANUP_KEYS_REVOKED_STATE"),
    ],
)
def test_an_incoherent_mapping_names_its_setting(changes: dict[str, object], setting: str) -> None:
    """Each bad combination is one line starting with the setting to fix."""
    problem = settings_problem(dataclasses.replace(STATE_ONLY, **changes))  # type: ignore[arg-type]
    assert problem is not None
    assert problem.startswith(f"{setting}:")


def test_coherent_mappings_pass() -> None:
    """Ours, state only, and both markers are coherent."""
    both = dataclasses.replace(STATE_ONLY, revoked_at_column="revokedAt")
    assert [settings_problem(m) for m in (KeyTableMapping(), STATE_ONLY, both)] == [None] * 3


def test_a_bad_combination_stops_start_up_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A state column without a revoked state fails load_settings with that setting's name."""
    monkeypatch.setenv("CLEANUP_KEYS_TABLE", "keysvc.keys")
    monkeypatch.setenv("CLEANUP_KEYS_STATE_COLUMN", "status")
    with pytest.raises(ConfigurationError, match=r"^CLEANUP_KEYS_REVOKED_STATE: "):
        load_settings()


def test_our_own_columns_are_usable() -> None:
    """The catalog of our api_keys raises no problem against the default mapping."""
    assert catalog_problems(KeyTableMapping(), OUR_TYPES) == []


def test_a_missing_column_is_named() -> None:
    """A mapped column the table lacks is reported under its setting."""
    types = {k: v for k, v in OUR_TYPES.items() if k != "revoked_by"}
    assert catalog_problems(KeyTableMapping(), types) == [
        "CLEANUP_KEYS_REVOKED_BY_COLUMN: no column 'revoked_by' in api_keys"
        " (an optional column's setting may be set empty)"
    ]


@pytest.mark.parametrize(
    ("column", "bad_type", "setting"),
    [
        ("created_at", "date", "CLEANUP_KEYS_CREATED_COLUMN"),
        ("revoked_at", "boolean", "CLEANUP_KEYS_REVOKED_AT_COLUMN"),
        ("id", "jsonb", "CLEANUP_KEYS_ID_COLUMN"),
        ("revocation_reason", "integer", "CLEANUP_KEYS_REASON_COLUMN"),
    ],
)
def test_an_unusable_type_is_named(column: str, bad_type: str, setting: str) -> None:
    """A column of a type the statements cannot compare or write is reported."""
    problems = catalog_problems(KeyTableMapping(), {**OUR_TYPES, column: bad_type})
    assert len(problems) == 1
    assert problems[0].startswith(f"{setting}: column {column!r} is {bad_type}")


@pytest.mark.parametrize(
    "usable", ["bigint", "character varying(64)", "numeric(20,0)", "integer", "uuid"]
)
def test_ids_of_any_usual_type_are_usable(usable: str) -> None:
    """Text, varchar, uuid and integer ids are all accepted as they are."""
    assert catalog_problems(KeyTableMapping(), {**OUR_TYPES, "id": usable}) == []
