"""Keys that slip past a removal ("R1 re-check" and "R6 late keys", docs/design.md), as pure
functions.

They state the rules; the statements in adapters/postgres/keys.py apply them to many keys at
once (`_RECHECK` the re-check, `LATE_KEYS_SQL` and `_REVOKE_LATE` R6, R1's statement noting
R6's candidates), and tests/integration/test_late_key_sweep.py holds the SQL to these
functions on random data. adapters/postgres/late_keys.py only keeps the sweep's cursor.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from cleanup_worker.domain.events import Change
from cleanup_worker.domain.rules import HistoryEntry, Membership, State, derive_membership

__all__ = ["group_has_caught_up", "late_key_removal", "recheck_removal", "settle_cutoff"]


def recheck_removal(
    key_created_at: datetime, key_revoked: bool, history: Iterable[HistoryEntry]
) -> HistoryEntry | None:
    """R1 re-check: the applied removal that revokes this key, or None.

    A live key created at or before the time T of one of its member's removals is revoked as
    R1 would have revoked it; it is R1 and nothing else, so re-adds do not matter. Of several
    such removals the earliest (by R3 order) is named: the one a replay of the events in time
    order would have revoked the key with, whichever order they were applied in.
    """
    if key_revoked:
        return None
    covering = [
        entry
        for entry in history
        if entry.change is Change.REMOVED and key_created_at <= entry.time
    ]
    return min(covering, key=lambda entry: entry.order_key, default=None)


def late_key_removal(
    key_created_at: datetime,
    key_revoked: bool,
    baseline: Membership | None,
    history: Iterable[HistoryEntry],
) -> HistoryEntry | None:
    """R6 late key: the removal that makes this key late, or None when it is not late.

    A live key created strictly after its member's latest removal while the membership is
    still `removed` (R3) is late. The latest removal must be an event of the ledger, which the
    revocation names; a member removed only by a row that predates the worker (a baseline)
    is the backfill's (R5). Whether the consumer group has caught up is a separate question
    (`group_has_caught_up`).
    """
    if key_revoked:
        return None
    entries = list(history)
    row = derive_membership(baseline, entries)
    if row is None or row.state is not State.REMOVED:
        return None
    removals = [entry for entry in entries if entry.change is Change.REMOVED]
    if not removals:
        return None
    latest = max(removals, key=lambda entry: entry.order_key)
    if latest.time != row.changed_at:  # the latest removal is the baseline's
        return None
    if key_created_at <= latest.time:  # R1's key, not a late one
        return None
    return latest


def settle_cutoff(key_created_at: datetime, settle: timedelta) -> datetime:
    """Every record produced before this time must be consumed before R6 may revoke the key:
    a re-add produced up to `settle` after the key was created still wins."""
    return key_created_at + settle


def group_has_caught_up(
    key_created_at: datetime, settle: timedelta, consumed_before: datetime | None
) -> bool:
    """R6's guard: has the whole consumer group consumed every record produced before the
    key's cutoff? `consumed_before` is a time before which every record, on every partition
    of the configured topics, is consumed (None: not known)."""
    return consumed_before is not None and settle_cutoff(key_created_at, settle) <= consumed_before
