"""The value rules that events and the memberships file share (domain/values.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup_worker.domain.values import has_forbidden_characters, parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T14:03:07.512Z", datetime(2026, 11, 26, 14, 3, 7, 512000, tzinfo=UTC)),
        ("2026-11-26t15:03:07+01:00", datetime(2026, 11, 26, 14, 3, 7, tzinfo=UTC)),
        ("2026-11-26T14:03:07.1234567891z", datetime(2026, 11, 26, 14, 3, 7, 123456, tzinfo=UTC)),
    ],
)
def test_parses_rfc3339_with_offset_to_utc(text: str, expected: datetime) -> None:
    """Offsets are applied, digits beyond microseconds truncated."""
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T14:03:07",
        "2026-11-26",
        "1764165787",
        "２０２６-11-26T14:03:07Z",
        " 2026-11-26T14:03:07Z",
    ],
)
def test_rejects_times_without_the_rfc3339_shape(text: str) -> None:
    """No offset, no time, epoch numbers, non-ASCII digits and padding are refused."""
    with pytest.raises(ValueError, match="not an RFC 3339 time with an offset"):
        parse_rfc3339(text)


@pytest.mark.parametrize("text", ["2026-02-30T10:00:00Z", "2026-13-01T00:00:00Z"])
def test_rejects_impossible_dates(text: str) -> None:
    """The right shape with an impossible calendar date is not a valid time."""
    with pytest.raises(ValueError, match="not a valid time"):
        parse_rfc3339(text)


@given(st.text())
def test_parse_raises_only_value_error(text: str) -> None:
    """Any text either parses to an aware UTC time or raises ValueError."""
    try:
        parsed = parse_rfc3339(text)
    except ValueError:
        return
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("value", ["a\x00b", "tab\there", "\x7f", "\x85", "lone\ud800"])
def test_control_characters_and_surrogates_are_forbidden(value: str) -> None:
    """NUL, C0/C1 controls and unpaired surrogates cannot be stored or encoded safely."""
    assert has_forbidden_characters(value)


def test_ordinary_identifiers_are_allowed() -> None:
    """Printable text, including non-ASCII letters, is fine."""
    assert not has_forbidden_characters("IBMid-550001 Zoë/東京")
