"""`backfill --memberships FILE.csv`: the operator's list of active members as R5's truth.

The file is validated line by line while it streams into a session TEMP table with `COPY`,
so its size never shows in our memory, and the first bad line stops the load (and the run,
before any write) with its number and what is wrong. Values are never quoted back: a line
number and a column name are enough to find the problem.

Format: UTF-8 CSV, header `account_id,iam_id,member_since` (or `account_id,iam_id`), one
active member per line; `member_since` is empty or RFC 3339 with an offset. Blank lines are
skipped. A quoted field may not span lines.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from cleanup_worker.domain.values import (
    ACCOUNT_ID_MAX,
    IAM_ID_MAX,
    has_forbidden_characters,
    parse_rfc3339,
)
from cleanup_worker.errors import MembershipFileError

HEADER = ("account_id", "iam_id", "member_since")

MemberRow = tuple[str, str, datetime | None, int]  # account_id, iam_id, member_since, line


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """What was loaded, recorded with the run so that `--resume` can insist on the same file."""

    name: str
    sha256: str
    members: int


def _parse_time(value: str) -> datetime:
    try:
        return parse_rfc3339(value)
    except ValueError as exc:  # its message names the problem, never the value
        raise ValueError(f"member_since is {exc}") from None


def _check_id(column: str, value: str, limit: int) -> str:
    if not value:
        raise ValueError(f"{column} is empty")
    if len(value) > limit:
        raise ValueError(f"{column} is longer than {limit} characters")
    if value != value.strip():
        # " alice" would silently be another member than "alice", and her keys orphaned.
        raise ValueError(f"{column} has leading or trailing whitespace")
    if has_forbidden_characters(value):
        raise ValueError(f"{column} contains control characters")
    return value


def _fields(raw: bytes, number: int) -> list[str] | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not valid UTF-8") from None
    if number == 1:
        text = text.removeprefix("\ufeff")  # a byte-order mark from a spreadsheet export
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise ValueError(f"malformed CSV ({exc})") from None


def _header(fields: list[str] | None) -> int:
    if fields is None or tuple(fields) not in (HEADER, HEADER[:2]):
        raise ValueError(f"the header must be {','.join(HEADER)} (member_since may be left out)")
    return len(fields)


def _row(fields: list[str], columns: int, number: int) -> MemberRow:
    if not 2 <= len(fields) <= columns:
        expected = "2 or 3" if columns == 3 else "2"
        raise ValueError(f"expected {expected} fields, found {len(fields)}")
    account_id = _check_id("account_id", fields[0], ACCOUNT_ID_MAX)
    iam_id = _check_id("iam_id", fields[1], IAM_ID_MAX)
    since = fields[2] if len(fields) == 3 else ""
    return account_id, iam_id, (_parse_time(since) if since else None), number


def parse_lines(lines: Iterable[bytes], name: str) -> Iterator[MemberRow]:
    """The members of a memberships file, given its raw lines; stops at the first bad line."""
    columns = 0
    for number, raw in enumerate(lines, start=1):
        try:
            fields = _fields(raw, number)
            if not columns:
                columns = _header(fields)
            elif fields is not None:
                yield _row(fields, columns, number)
        except ValueError as exc:
            raise MembershipFileError(f"{name} line {number}: {exc}") from None
    if not columns:
        raise MembershipFileError(f"{name} line 1: the file is empty (no header)")


class _Digest:
    """Passes lines through while hashing them, so the file is read once."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = lines
        self._hash = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for line in self._lines:
            self._hash.update(line)
            yield line

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


_TABLE = MembershipSource.FILE.value
_SCHEMA, _NAME = _TABLE.split(".")
# The columns R5 reads from account_memberships; every member listed is active.
_CREATE = f"""
CREATE TEMP TABLE {_NAME} (
    account_id   text NOT NULL,
    iam_id       text NOT NULL,
    state        text NOT NULL DEFAULT 'active',
    member_since timestamptz,
    line         bigint NOT NULL
)
"""
_FIRST_DUPLICATE = f"""
SELECT line, first_line
FROM (SELECT line, min(line) OVER (PARTITION BY account_id, iam_id) AS first_line
      FROM {_TABLE}) AS lines
WHERE line > first_line
ORDER BY line
LIMIT 1
"""


async def load(conn: Connection, path: Path) -> LoadedFile:
    """Loads the file into a TEMP table on `conn` (R5 then reads `MembershipSource.FILE`).

    It lives as long as the connection, so the whole run must use this one connection.
    """
    name = path.name
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise MembershipFileError(f"{name}: cannot read ({exc.strerror})") from None
    with handle:
        lines = _Digest(handle)
        async with conn.transaction():
            await conn.execute("SET LOCAL statement_timeout = 0")  # big files take a while
            await conn.execute(_CREATE)
            await conn.copy_records_to_table(
                _NAME,
                schema_name=_SCHEMA,
                columns=["account_id", "iam_id", "member_since", "line"],
                records=parse_lines(lines, name),
            )
            duplicate = await conn.fetchrow(_FIRST_DUPLICATE)
            if duplicate is not None:
                raise MembershipFileError(
                    f"{name} line {duplicate['line']}: the same account_id and iam_id as "
                    f"line {duplicate['first_line']}"
                )
            await conn.execute(f"CREATE UNIQUE INDEX ON {_TABLE} (account_id, iam_id)")
            members: int = await conn.fetchval(f"SELECT count(*) FROM {_TABLE}")
    await conn.execute(f"ANALYZE {_TABLE}")  # temp tables are never auto-analyzed
    return LoadedFile(name=name, sha256=lines.hexdigest(), members=members)
