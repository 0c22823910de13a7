"""`backfill --memberships FILE.csv`: the file's format, and the file as R5's truth."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cleanup_worker.adapters.membership_file import parse_lines
from cleanup_worker.domain.rules import OrphanReason
from cleanup_worker.errors import BackfillError, MembershipFileError
from cleanup_worker.service.backfill.summary import BackfillRefused, Summary
from testkit.database import revoked_keys, seed_key
from testkit.events import at
from testkit.processes import run_backfill

HEADER = b"account_id,iam_id,member_since\n"


def members(text: bytes) -> list[tuple[str, str, datetime | None, int]]:
    return list(parse_lines(text.splitlines(keepends=True), "m.csv"))


def test_rows_carry_their_line_numbers_and_times_in_utc() -> None:
    """Each member comes with its line; blank lines are skipped; times become UTC."""
    text = HEADER + b"a,u1,2026-01-01T10:00:00+02:00\n\na,u2,\n"
    assert members(text) == [
        ("a", "u1", datetime(2026, 1, 1, 8, tzinfo=UTC), 2),
        ("a", "u2", None, 4),
    ]


def test_two_column_header_and_exports_from_spreadsheets_are_accepted() -> None:
    """A header without member_since, a byte-order mark, CRLF and quoted commas all parse."""
    text = b'\xef\xbb\xbfaccount_id,iam_id\r\n"acct,1",u1\r\n'
    assert members(text) == [("acct,1", "u1", None, 2)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "line 1: the file is empty"),
        (b"account,user\na,u\n", "line 1: the header must be account_id,iam_id,member_since"),
        (HEADER + b"a,u1,\na,u2,,x\n", "line 3: expected 2 or 3 fields, found 4"),
        (HEADER + b",u1,\n", "line 2: account_id is empty"),
        (HEADER + b"a," + b"u" * 257 + b",\n", "line 2: iam_id is longer than 256 characters"),
        (HEADER + b"a" * 129 + b",u,\n", "line 2: account_id is longer than 128 characters"),
        (HEADER + b"a, u1,\n", "line 2: iam_id has leading or trailing whitespace"),
        (HEADER + b"a,u\x01,\n", "line 2: iam_id contains control characters"),
        (HEADER + b"a,u1,2026-01-01T10:00:00\n", "line 2: member_since is not an RFC 3339 time"),
        (HEADER + b"a,u1,2026-02-30T10:00:00Z\n", "line 2: member_since is not a valid time"),
        (HEADER + b"a,u1,\na,\xff\xfe,\n", "line 3: not valid UTF-8"),
        (HEADER + b'a,"u1,\n', "line 2: malformed CSV"),
    ],
    ids=[
        "empty", "header", "fields", "empty-id", "long-iam-id", "long-account-id",
        "whitespace", "control", "no-offset", "bad-date", "utf8", "quote",
    ],
)  # fmt: skip
def test_a_bad_line_is_named_with_what_is_wrong(text: bytes, message: str) -> None:
    """The first malformed line stops the parse with its number and the problem."""
    with pytest.raises(MembershipFileError, match=f"^{re.escape(f'm.csv {message}')}"):
        members(text)


async def backfill(database_url: str, path: Path, **request: Any) -> Summary:
    return await run_backfill(database_url, memberships=path, **request)


async def test_file_replaces_account_memberships(
    database_url: str, db: Any, tmp_path: Path
) -> None:
    """With a file, only its members keep keys (from member_since on); the table is ignored."""
    await db.execute(
        "INSERT INTO account_memberships (account_id, iam_id, state, changed_at) "
        "VALUES ('acct', 'table-only', 'active', now())"
    )
    listed = await seed_key(db, "acct", "listed", at(0))
    recent = await seed_key(db, "acct", "rejoined", at(10))
    early = await seed_key(db, "acct", "rejoined", at(1))
    table_only = await seed_key(db, "acct", "table-only", at(0))
    path = tmp_path / "members.csv"
    path.write_text(
        f"account_id,iam_id,member_since\nacct,listed,\nacct,rejoined,{at(5).isoformat()}\n"
    )
    summary = await backfill(database_url, path)
    assert set(await revoked_keys(db)) == {early, table_only}
    assert listed not in await revoked_keys(db)
    assert recent not in await revoked_keys(db)
    assert summary.revoked == {
        OrphanReason.NO_MEMBERSHIP: 1,
        OrphanReason.CREATED_BEFORE_MEMBER_SINCE: 1,
    }


async def test_duplicate_member_names_both_lines_and_writes_nothing(
    database_url: str, db: Any, tmp_path: Path
) -> None:
    """The same member twice is refused, naming both lines, before any run record or write."""
    key = await seed_key(db, "acct", "alice", at(0))
    path = tmp_path / "members.csv"
    path.write_text("account_id,iam_id\nacct,bob\nacct,carol\nacct,bob\n")
    with pytest.raises(
        MembershipFileError, match="line 4: the same account_id and iam_id as line 2"
    ):
        await backfill(database_url, path)
    assert key not in await revoked_keys(db)
    assert await db.fetchval("SELECT count(*) FROM backfill_runs") == 0


async def test_file_with_no_member_is_refused(database_url: str, db: Any, tmp_path: Path) -> None:
    """A file with a header and no member would orphan every key: the valve refuses."""
    await seed_key(db, "acct", "alice", at(0))
    path = tmp_path / "members.csv"
    path.write_text("account_id,iam_id,member_since\n")
    with pytest.raises(BackfillRefused, match="the memberships file has no active member"):
        await backfill(database_url, path)
    assert await revoked_keys(db) == {}


async def test_resume_insists_on_the_same_file(database_url: str, db: Any, tmp_path: Path) -> None:
    """--resume of a run that used a file refuses a file with different contents."""
    await seed_key(db, "acct", "alice", at(0))
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("account_id,iam_id\nacct,bob\n")
    second.write_text("account_id,iam_id\nacct,bob\nacct,carol\n")
    with pytest.raises(BackfillRefused):  # 100 % of the keys > --max-fraction 0.5
        await backfill(database_url, first, max_fraction=0.5)
    with pytest.raises(BackfillError, match=r"second\.csv is not the file run"):
        await backfill(database_url, second, resume=True)
