"""The parts the revoking statements (keys.py) and the key reads share, built from the key
table ("Key table mapping", docs/design.md): the outbox and audit CTEs, the key's columns as
text, and R5's verdict.

The statements are written as they run, with `{name}` marking where a part goes; `fill`
puts the parts in by plain replacement (not `str.format`), so the SQL's own braces, such as
the empty array '{}', stay as written.
"""

from __future__ import annotations

from enum import StrEnum

from cleanup_worker.adapters.postgres.key_table import AUDIT_TABLE, KeyTable
from cleanup_worker.adapters.postgres.outbox import OUTBOX_ROW_NOTICES

__all__ = [
    "MembershipSource",
    "fill",
    "key_texts",
    "membership_join",
    "orphan_reason_sql",
    "revoking",
]


class MembershipSource(StrEnum):
    """Where R5 reads membership: the worker's table, or the operator's file loaded for one run.

    The values are table names; they are the only names ever formatted into R5's SQL.
    """

    TABLE = "account_memberships"
    FILE = "pg_temp.backfill_memberships"  # a session TEMP table, same columns


# The notices of the keys in `revoked` (which returns `KeyTable.returning`): one outbox row of
# parallel arrays per 500 keys (OUTBOX_ROW_NOTICES), none when nothing was revoked. Each
# row's arrays come from one aggregation over the same rows, so their elements line up.
_ANNOUNCE = f""", announced AS (
    INSERT INTO revocation_outbox_batches
        (notices, key_ids, account_ids, iam_ids, reasons, revoked_ats, revoked_bys, event_times)
    SELECT count(*), array_agg(id), array_agg(account_id), array_agg(iam_id),
           array_agg(revocation_reason), array_agg(revoked_at), array_agg(revoked_by),
           array_agg(event_time)
    FROM (SELECT *, (row_number() OVER () - 1) / {OUTBOX_ROW_NOTICES} AS part FROM revoked) AS r
    GROUP BY part
)"""

# Where the key table has no column for them, when, why and by whom a key was revoked go to
# our own table, from the same statement (docs/key-table.md). A key revoked once is never
# live again (R4), so a second row cannot come; should a table without R4's trigger bring one
# back, the first revocation's record stays.
_AUDIT = f""", audited AS (
    INSERT INTO {AUDIT_TABLE} (key_id, reason, revoked_by, revoked_at)
    SELECT id, revocation_reason, revoked_by, revoked_at FROM revoked
    ON CONFLICT (key_id) DO NOTHING
)"""


def fill(statement: str, **parts: str) -> str:
    """`statement` with each `{name}` replaced by `parts[name]`."""
    for name, part in parts.items():
        statement = statement.replace("{" + name + "}", part)
    return statement


def revoking(
    table: KeyTable,
    statement: str,
    *,
    announce: bool,
    plain: str,
    reason: str,
    revoked_by: str,
    event_time: str,
) -> str:
    """A revoking statement for `table`: `{keys}` the table, `{live}` the live marker of `k`,
    `{revoke}` the SET list, `{returning}` what `revoked` returns (`plain` when neither the
    outbox nor the audit needs more), `{announce}` and `{audit}` where their CTEs go."""
    full = announce or table.audited_apart
    return fill(
        statement,
        keys=table.name,
        live=table.live("k"),
        revoke=table.revoke_set(reason, revoked_by),
        returning=table.returning(reason, revoked_by, event_time) if full else plain,
        announce=_ANNOUNCE if announce else "",
        audit=_AUDIT if table.audited_apart else "",
        id=table.id(),
        account=table.account(),
        user=table.user(),
        created=table.created(),
    )


def key_texts(table: KeyTable, alias: str = "k") -> dict[str, str]:
    """The key's id, account and user as text, and its created time as timestamptz."""
    m = table.mapping
    return {
        "id_text": table.as_text(table.id(alias), m.id_column),
        "account_text": table.as_text(table.account(alias), m.account_column),
        "user_text": table.as_text(table.user(alias), m.user_column),
        "created_tz": table.as_timestamptz(table.created(alias), m.created_column),
    }


# R5 for the key `k` (a row of the key table) and `m`, its membership row LEFT JOINed (all
# null when there is none): the OrphanReason value, or null when the membership keeps the key.
# It mirrors domain.rules.orphan_reason, which is the spec; the tests compare the two.
# Whether `k` is already revoked is for the caller to test (`KeyTable.live`).
_ORPHAN_REASON = """CASE
        WHEN m.account_id IS NULL THEN 'no_membership'
        WHEN m.state <> 'active' THEN 'membership_removed'
        WHEN m.member_since IS NOT NULL AND {created_tz} < m.member_since
            THEN 'created_before_member_since'
    END"""


def orphan_reason_sql(table: KeyTable) -> str:
    return fill(_ORPHAN_REASON, created_tz=key_texts(table)["created_tz"])


def membership_join(table: KeyTable, memberships: str) -> str:
    """`memberships` AS m, on the member of the key `k`."""
    texts = key_texts(table)
    return (
        f"{memberships} AS m ON m.account_id = {texts['account_text']}"
        f" AND m.iam_id = {texts['user_text']}"
    )
