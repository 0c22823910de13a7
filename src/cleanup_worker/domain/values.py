"""The shapes of the values that cross our boundary ("Event contract", docs/design.md): times and
identifiers.

Events and the operator's memberships file carry the same kinds of values, so both read them
through the functions here; their limits and their time format are written down once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = [
    "ACCOUNT_ID_MAX",
    "EVENT_ID_MAX",
    "IAM_ID_MAX",
    "RFC3339_PATTERN",
    "SOURCE_MAX",
    "has_forbidden_characters",
    "parse_rfc3339",
]

ACCOUNT_ID_MAX = 128
IAM_ID_MAX = 256
EVENT_ID_MAX = 256
SOURCE_MAX = 1024

# ASCII digits only (`\d` would accept other scripts' digits), and an explicit offset: a time
# without one is ambiguous. Anchored, because the JSON Schema exports it as it is.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_RFC3339 = re.compile(RFC3339_PATTERN)

# CloudEvents strings exclude control characters and surrogates; PostgreSQL text cannot hold
# NUL and asyncpg cannot encode a lone surrogate, so such a value would poison a batch later.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 time with an explicit offset, as an aware UTC datetime.

    Raises ValueError (without quoting `value`) for anything else. Digits beyond microseconds
    are truncated, never rounded: rounding could carry into the next second.
    """
    if _RFC3339.fullmatch(value) is None:
        raise ValueError("not an RFC 3339 time with an offset")
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, leap second 60, year 1 at +01:00, ...
        raise ValueError("not a valid time") from None


def has_forbidden_characters(value: str) -> bool:
    """True when `value` holds a control character or an unpaired surrogate."""
    return _FORBIDDEN.search(value) is not None
