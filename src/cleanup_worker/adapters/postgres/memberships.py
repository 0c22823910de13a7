"""SQL for the membership side of a batch: member locks, the event ledger, baselines, rows (R3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.adapters.postgres.json_rows import json_rows
from cleanup_worker.domain.events import Change, Member, MembershipEvent
from cleanup_worker.domain.rules import HistoryEntry, Membership, State


def _columns(members: Iterable[Member]) -> tuple[list[str], list[str]]:
    accounts, iam_ids = [], []
    for account_id, iam_id in members:
        accounts.append(account_id)
        iam_ids.append(iam_id)
    return accounts, iam_ids


# A member's lock row is created the first time a batch touches it; a concurrent batch
# inserting the same row waits for ours to end. Sorted, so that batches wait for each other
# in one order and cannot deadlock.
_ENSURE_MEMBER_LOCKS = """
INSERT INTO member_locks (account_id, iam_id)
SELECT m.a, m.u FROM unnest($1::text[], $2::text[]) AS m(a, u)
ORDER BY m.a, m.u
ON CONFLICT DO NOTHING
RETURNING account_id, iam_id
"""

# A second statement, so that its snapshot sees rows another batch committed while the first
# waited. The rows are locked in sorted order (the lock is taken above the sort).
_LOCK_MEMBERS = """
SELECT 1
FROM member_locks AS l
JOIN unnest($1::text[], $2::text[]) AS m(a, u) ON l.account_id = m.a AND l.iam_id = m.u
ORDER BY l.account_id, l.iam_id
FOR UPDATE OF l
"""


async def lock_members(conn: Connection, members: Sequence[Member]) -> None:
    """Serialises work on the same members across replicas until this transaction ends."""
    created = {
        (row["account_id"], row["iam_id"])
        for row in await conn.fetch(_ENSURE_MEMBER_LOCKS, *_columns(members))
    }
    # A row this transaction created is already ours alone: nobody can see it, and whoever
    # inserts it too waits for us. Only the rows that existed need locking.
    existing = [member for member in members if member not in created]
    if existing:
        await conn.execute(_LOCK_MEMBERS, *_columns(existing))


# R3's baselines: a row that predates every event of its member is kept as that member's
# baseline (the members of this batch that have no event in the ledger yet).
_CAPTURE_BASELINES = """
INSERT INTO membership_baselines (account_id, iam_id, state, member_since, changed_at)
SELECT m.account_id, m.iam_id, m.state, m.member_since, m.changed_at
FROM account_memberships AS m
JOIN unnest($1::text[], $2::text[]) AS t(account_id, iam_id) USING (account_id, iam_id)
WHERE NOT EXISTS (
    SELECT 1 FROM membership_events AS e
    WHERE e.account_id = m.account_id AND e.iam_id = m.iam_id
)
-- A baseline kept earlier (only possible when a producer reused an event identity for another
-- member) is returned as it was, so that it is not forgotten.
ON CONFLICT (account_id, iam_id) DO UPDATE SET captured_at = membership_baselines.captured_at
RETURNING account_id, iam_id, state, member_since, changed_at
"""

# The batch's events into the ledger; a known (source, id) is a duplicate and changes nothing.
_RECORD_EVENTS = """
INSERT INTO membership_events (source, event_id, account_id, iam_id, change, event_time,
                               event_type, kafka_topic, kafka_partition, kafka_offset,
                               kafka_timestamp)
SELECT r.source, r.event_id, r.account_id, r.iam_id, r.change, r.event_time,
       r.event_type, r.kafka_topic, r.kafka_partition, r.kafka_offset, r.kafka_timestamp
FROM json_to_recordset($3::json) AS r(
    source text, event_id text, account_id text, iam_id text, change text,
    event_time timestamptz, event_type text, kafka_topic text, kafka_partition int,
    kafka_offset bigint, kafka_timestamp timestamptz)
ON CONFLICT (source, event_id) DO NOTHING
RETURNING source, event_id, account_id, iam_id
"""

# Both in one statement, one round trip. Every part reads the ledger as it was before the
# statement, as when they were two statements in this order: the baselines are those of
# members without earlier events, and "had history" means events before this batch. LATERAL
# with LIMIT keeps "had history" an index probe per row; a plain EXISTS may be planned as a
# hash of the whole ledger when its statistics are stale.
_CAPTURE_AND_RECORD = f"""
WITH captured AS ({_CAPTURE_BASELINES}), inserted AS ({_RECORD_EVENTS})
SELECT true AS event, i.source, i.event_id, i.account_id, i.iam_id,
       prior.seen IS NOT NULL AS had_history,
       NULL::text AS state, NULL::timestamptz AS member_since, NULL::timestamptz AS changed_at
FROM inserted AS i
LEFT JOIN LATERAL (
    SELECT true AS seen FROM membership_events AS e
    WHERE e.account_id = i.account_id AND e.iam_id = i.iam_id
    LIMIT 1
) AS prior ON true
UNION ALL
SELECT false, NULL, NULL, c.account_id, c.iam_id, NULL, c.state, c.member_since, c.changed_at
FROM captured AS c
"""


def _ledger_row(event: MembershipEvent) -> dict[str, object]:
    origin = event.origin
    return {
        "source": event.source,
        "event_id": event.id,
        "account_id": event.account_id,
        "iam_id": event.iam_id,
        "change": event.change.value,
        "event_time": event.time,
        "event_type": event.type,
        "kafka_topic": origin.topic if origin else None,
        "kafka_partition": origin.partition if origin else None,
        "kafka_offset": origin.offset if origin else None,
        "kafka_timestamp": origin.timestamp if origin else None,
    }


def _membership(row: Any) -> Membership:
    return Membership(State(row["state"]), row["member_since"], row["changed_at"])


@dataclass(frozen=True, slots=True)
class Recorded:
    new: set[tuple[str, str]]  # identities that were not in the ledger before
    had_history: set[Member]  # members of new events that had earlier events
    baselines: dict[Member, Membership]  # rows kept as baselines of members without events


async def record_events(
    conn: Connection, members: Sequence[Member], events: Sequence[MembershipEvent]
) -> Recorded:
    """Keeps the baselines of `members` (R3), adds the events to the ledger; tells which
    events were new, whose members had history, and the baselines of the members that have
    no event in the ledger yet."""
    document = json_rows(_ledger_row(event) for event in events)
    rows = await conn.fetch(_CAPTURE_AND_RECORD, *_columns(members), document)
    recorded = Recorded(set(), set(), {})
    for row in rows:
        member = (row["account_id"], row["iam_id"])
        if not row["event"]:
            recorded.baselines[member] = _membership(row)
            continue
        recorded.new.add((row["source"], row["event_id"]))
        if row["had_history"]:
            recorded.had_history.add(member)
    return recorded


_HISTORY = """
SELECT e.account_id, e.iam_id, e.change, e.event_time, e.event_id, e.source
FROM membership_events AS e
JOIN unnest($1::text[], $2::text[]) AS t(account_id, iam_id) USING (account_id, iam_id)
"""

_BASELINES = """
SELECT b.account_id, b.iam_id, b.state, b.member_since, b.changed_at
FROM membership_baselines AS b
JOIN unnest($1::text[], $2::text[]) AS t(account_id, iam_id) USING (account_id, iam_id)
"""


async def load_histories(
    conn: Connection, members: Sequence[Member]
) -> tuple[dict[Member, Membership], dict[Member, list[HistoryEntry]]]:
    """The baseline and the whole event history of each member, as R3 needs them."""
    histories: dict[Member, list[HistoryEntry]] = {member: [] for member in members}
    if not members:
        return {}, histories
    accounts, iam_ids = _columns(members)
    baselines = {
        (row["account_id"], row["iam_id"]): _membership(row)
        for row in await conn.fetch(_BASELINES, accounts, iam_ids)
    }
    for row in await conn.fetch(_HISTORY, accounts, iam_ids):
        histories[(row["account_id"], row["iam_id"])].append(
            HistoryEntry(Change(row["change"]), row["event_time"], row["event_id"], row["source"])
        )
    return baselines, histories


_UPSERT_MEMBERSHIPS = """
INSERT INTO account_memberships AS m (account_id, iam_id, state, member_since, changed_at)
SELECT * FROM json_to_recordset($1::json) AS r(
    account_id text, iam_id text, state text, member_since timestamptz, changed_at timestamptz)
ON CONFLICT (account_id, iam_id) DO UPDATE
SET state = EXCLUDED.state, member_since = EXCLUDED.member_since, changed_at = EXCLUDED.changed_at
WHERE (m.state, m.member_since, m.changed_at)
      IS DISTINCT FROM (EXCLUDED.state, EXCLUDED.member_since, EXCLUDED.changed_at)
RETURNING 1
"""


async def write_memberships(conn: Connection, rows: Mapping[Member, Membership]) -> int:
    """Stores the derived rows; returns how many actually changed."""
    document = json_rows(
        {
            "account_id": account_id,
            "iam_id": iam_id,
            "state": row.state.value,
            "member_since": row.member_since,
            "changed_at": row.changed_at,
        }
        for (account_id, iam_id), row in rows.items()
    )
    return len(await conn.fetch(_UPSERT_MEMBERSHIPS, document))
