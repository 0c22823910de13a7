"""Key tables of other shapes, for the suites that run over more than our own `api_keys`
(docs/key-table.md; "Key table mapping" in docs/design.md).

A `KeyTableShape` is a table an adopter's key service already has: its DDL (created, in the
test's database, by a role that is not the worker's, as that service would own it), the
`CLEANUP_KEYS_*` mapping that points the worker at it, and the few reads and writes the
suites need (insert a key, which keys are live, revoked or neither, each revocation's reason
and revoked_by). `NATIVE` is our own `api_keys` with no mapping at all. `BILLING` and
`KEYRING` together differ from it in every dimension: id type, account and user types,
marker, schema, quoted camelCase identifiers, no reason or revoked-by column.

The suites name members with short strings ("acct", "alice"); a mapped table may hold uuids
or integers there, and an event must carry the value as the table holds it. `member()` is
the one place that turns a name into that value, deterministically.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from cleanup_worker.domain.key_table import KeyTableMapping
from cleanup_worker.settings import Settings

OWNER = "key_service"  # the adopter's key service: owns the mapped table, is not the worker
NAMESPACE = uuid.UUID("6d1f6f3e-24b0-4c5e-9b1e-6b6579746162")  # for uuid5 of member names
AUDIT_TABLE = "key_revocations"  # ours: reason and revoked_by when the mapped table has none


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # 'text' | 'uuid' | 'bigint'

    @property
    def sql(self) -> str:
        return quote(self.name)


@dataclass(frozen=True)
class KeyTableShape:
    """One key table: where it is, its columns, its revocation marker, and its mapping."""

    name: str
    schema: str | None  # None: ours (api_keys in public, made by our migrations)
    table: str
    id: Column
    account: Column
    user: Column
    created: str
    ddl: tuple[str, ...] = ()
    revoked_at: str | None = None
    state: str | None = None
    live_states: tuple[str, ...] = ()
    revoked_state: str | None = None
    other_state: str | None = None  # neither live nor revoked (expired): left alone
    reason: str | None = None
    revoked_by: str | None = None
    extra_insert: Mapping[str, str] = field(default_factory=dict)  # column -> SQL value

    @property
    def native(self) -> bool:
        return self.schema is None

    @property
    def qualified(self) -> str:
        return self.table if self.schema is None else f"{quote(self.schema)}.{quote(self.table)}"

    def env(self) -> dict[str, str]:
        """The `CLEANUP_KEYS_*` variables of this mapping (none for our own table)."""
        if self.native:
            return {}
        values = {
            "TABLE": f"{self.schema}.{self.table}",
            "ID_COLUMN": self.id.name,
            "ACCOUNT_COLUMN": self.account.name,
            "USER_COLUMN": self.user.name,
            "CREATED_COLUMN": self.created,
            "REVOKED_AT_COLUMN": self.revoked_at,
            "STATE_COLUMN": self.state,
            "LIVE_STATES": ",".join(self.live_states) or None,
            "REVOKED_STATE": self.revoked_state,
            "REASON_COLUMN": self.reason,
            "REVOKED_BY_COLUMN": self.revoked_by,
        }
        # An optional column the table lacks is set empty (our api_keys' name is the default).
        return {f"CLEANUP_KEYS_{k}": v or "" for k, v in values.items()}

    def configure(self, settings: Settings) -> Settings:
        """`settings` pointed at this table (unchanged for our own), validated as at start."""
        if self.native:
            return settings
        env = self.env().items()
        fields = {name.removeprefix("CLEANUP_").lower(): value for name, value in env}
        return settings_with(settings, fields)

    def member(self, account: str, user: str) -> tuple[str, str]:
        """The member the suites call (account, user), as this table's columns hold it, in
        the text form an event carries."""
        return as_column_text(self.account.type, account), as_column_text(self.user.type, user)

    def bind(self, column: Column, text: str) -> Any:
        """An event's text value as asyncpg binds it for `column`."""
        if column.type == "uuid":
            return uuid.UUID(text)
        if column.type == "bigint":
            return int(text)
        return text


def settings_with(settings: Settings, fields: Mapping[str, str]) -> Settings:
    """`settings` with some fields given as their environment text, validated as at start."""
    return Settings.model_validate({**settings.model_dump(), **fields})


def as_column_text(column_type: str, name: str) -> str:
    """A member name as a column of this type holds it: the name itself for text, its uuid5
    for uuid, a stable 48-bit number for bigint."""
    if column_type == "uuid":
        return str(uuid.uuid5(NAMESPACE, name))
    if column_type == "bigint":
        return str(int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "big"))
    return name


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


NATIVE = KeyTableShape(
    name="native",
    schema=None,
    table="api_keys",
    id=Column("id", "uuid"),
    account=Column("account_id", "text"),
    user=Column("iam_id", "text"),
    created="created_at",
    revoked_at="revoked_at",
    reason="revocation_reason",
    revoked_by="revoked_by",
    extra_insert={"id": "gen_random_uuid()", "key_hash": "'sha256:test'"},
)

# An ORM's table: camelCase quoted names in a schema of its own, bigint identity ids, uuid
# tenants, bigint users, a status column as the only marker (with an 'expired' state that is
# neither live nor revoked), and no reason or revoked-by column (our audit table holds them).
BILLING = KeyTableShape(
    name="billing",
    schema="Billing",
    table="ApiKey",
    id=Column("keyId", "bigint"),
    account=Column("tenantId", "uuid"),
    user=Column("userId", "bigint"),
    created="createdAt",
    state="status",
    live_states=("active", "suspended"),
    revoked_state="revoked",
    other_state="expired",
    ddl=(
        'CREATE TABLE "Billing"."ApiKey" ('
        ' "keyId" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,'
        ' "tenantId" uuid NOT NULL,'
        ' "userId" bigint NOT NULL,'
        " \"label\" text NOT NULL DEFAULT '',"
        ' "secretDigest" bytea NOT NULL,'
        ' "createdAt" timestamptz NOT NULL DEFAULT now(),'
        " \"status\" text NOT NULL DEFAULT 'active'"
        "  CHECK (\"status\" IN ('active', 'suspended', 'expired', 'revoked')))",
    ),
    extra_insert={"secretDigest": "'\\x00'::bytea"},
)

# A hand-written table: text ids like 'ApiKey-<n>', bigint accounts, text users, both
# markers (a timestamp and a lifecycle state, 'expired' left alone), its own reason and
# revoked-by columns, lowercase names in a schema other than public.
KEYRING = KeyTableShape(
    name="keyring",
    schema="keyring",
    table="credentials",
    id=Column("key_name", "text"),
    account=Column("account_no", "bigint"),
    user=Column("principal", "text"),
    created="issued_at",
    revoked_at="revoked_on",
    state="lifecycle",
    live_states=("live",),
    revoked_state="revoked",
    other_state="expired",
    reason="why",
    revoked_by="by_whom",
    ddl=(
        "CREATE SEQUENCE keyring.credential_numbers",
        "CREATE TABLE keyring.credentials ("
        " key_name text PRIMARY KEY"
        "  DEFAULT 'ApiKey-' || nextval('keyring.credential_numbers'),"
        " account_no bigint NOT NULL,"
        " principal text NOT NULL,"
        " digest text NOT NULL,"
        " issued_at timestamptz NOT NULL DEFAULT now(),"
        " lifecycle text NOT NULL DEFAULT 'live',"
        " revoked_on timestamptz,"
        " why text,"
        " by_whom text)",
    ),
    extra_insert={"digest": "'sha256:test'"},
)

SHAPES = {shape.name: shape for shape in (NATIVE, BILLING, KEYRING)}


class _Active:
    """The shape the running test's fixtures installed (our own table unless one did)."""

    shape: KeyTableShape = NATIVE


def active() -> KeyTableShape:
    return _Active.shape


def activate(shape: KeyTableShape) -> None:
    _Active.shape = shape


def member(account: str, user: str) -> tuple[str, str]:
    """(account, user) of the suites' names, as the active key table holds them."""
    return active().member(account, user)


# Parametrizes a test over our own table and the two mapped shapes (the `key_shape`
# fixture of tests/conftest.py installs the table and points the settings at it).
over_key_tables = pytest.mark.parametrize("key_shape", list(SHAPES), indirect=True)


def account(name: str) -> str:
    """An account of the suites' names, as the active key table holds it."""
    return as_column_text(active().account.type, name)


def print_command() -> list[str]:
    return [sys.executable, "-m", "cleanup_worker", "migrate", "--print-key-table-sql"]


# A key service's table with a state-only marker and no reason or revoked-by column, in another
# schema with camelCase names: the mapping the unit and integration tests of the mapping share.
KEYSVC_STATE_ONLY = KeyTableMapping(
    table="keysvc.ApiKeys",
    id_column="keyId",
    account_column="tenantId",
    user_column="userId",
    created_column="createdAt",
    revoked_at_column=None,
    state_column="status",
    live_states=("active",),
    revoked_state="revoked",
    reason_column=None,
    revoked_by_column=None,
)
