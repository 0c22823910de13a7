"""The change-event mapping (pure) and Debezium's envelope in both JSON converter forms."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cleanup_worker.adapters.debezium.envelope import decode_change, decode_time
from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.domain.change_events import (
    CdcMapping,
    NeedsRowMemory,
    NoChange,
    RowChange,
    Unmappable,
    map_change,
)
from cleanup_worker.domain.events import Change
from cleanup_worker.service.apply.change_events import ChangeEventClassifier, RowEvents

T = datetime(2026, 11, 26, 14, 3, 7, 512345, tzinfo=UTC)
STATEFUL = CdcMapping(state_column="state", removed_states=frozenset({"removed", "suspended"}))
EXISTENCE = CdcMapping()

# Members as the event contract allows them: no control characters, no lone surrogates.
ids = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=20
)
states = st.sampled_from(["active", "invited", "removed", "suspended"])


def change(
    op: str, *, before: Any = None, after: Any = None, key: Any = None, lsn: int = 7
) -> RowChange:
    return RowChange(
        op, before, after, {"id": 1} if key is None else key, "debezium://d/db/public/m", lsn, T
    )


def row(account: str, user: str, state: str = "active") -> dict[str, object]:
    return {"id": 1, "account_id": account, "iam_id": user, "state": state, "role": "member"}


@given(ids, ids, states, st.sampled_from(["c", "u", "r"]))
def test_an_insert_update_or_read_says_what_the_state_says(
    account: str, user: str, state: str, op: str
) -> None:
    mapped = map_change(change(op, after=row(account, user, state)), STATEFUL)
    assert isinstance(mapped, tuple)
    (event,), remember = mapped
    assert event.member == (account, user)
    assert event.change is (Change.REMOVED if state in STATEFUL.removed_states else Change.ADDED)
    assert event.time == T  # no time column: the commit time
    assert remember is not None
    assert remember.member == (account, user)


@given(ids, ids, states)
def test_without_a_state_column_existence_is_membership(
    account: str, user: str, state: str
) -> None:
    mapped = map_change(change("u", after=row(account, user, state)), EXISTENCE)
    assert isinstance(mapped, tuple)
    assert mapped[0][0].change is Change.ADDED


@given(ids, ids, st.integers(0, 2**62))
def test_identity_is_the_position_and_row_key_so_redeliveries_coincide(
    account: str, user: str, lsn: int
) -> None:
    first = map_change(change("c", after=row(account, user), lsn=lsn), STATEFUL)
    again = map_change(change("c", after=row(account, user), lsn=lsn), STATEFUL)
    later = map_change(change("c", after=row(account, user), lsn=lsn + 1), STATEFUL)
    assert isinstance(first, tuple)
    assert isinstance(again, tuple)
    assert isinstance(later, tuple)
    assert first[0][0].identity == again[0][0].identity != later[0][0].identity
    # Ids of one row sort by position (R3 orders equal times by id).
    assert first[0][0].id < later[0][0].id


@given(ids, ids)
def test_a_delete_never_takes_its_member_from_placeholders(account: str, user: str) -> None:
    placeholders = {"id": 1, "account_id": "", "iam_id": "", "state": "active"}
    pending = map_change(change("d", before=placeholders), STATEFUL)
    assert isinstance(pending, NeedsRowMemory)
    resolved = map_change(change("d", before=placeholders), STATEFUL, remembered=(account, user))
    assert isinstance(resolved, tuple)
    assert resolved[0][0].member == (account, user)
    assert resolved[0][0].change is Change.REMOVED
    assert resolved[0][0].time == T


@given(ids, ids)
def test_a_delete_whose_key_holds_the_member_needs_no_memory(account: str, user: str) -> None:
    key = {"account_id": account, "iam_id": user}
    mapped = map_change(change("d", before=key, key=key), STATEFUL)
    assert isinstance(mapped, tuple)
    assert mapped[0][0].member == (account, user)


def test_an_update_of_another_column_changes_nothing_when_before_is_known() -> None:
    before, after = row("a", "u"), {**row("a", "u"), "role": "owner"}
    assert isinstance(map_change(change("u", before=before, after=after), STATEFUL), NoChange)


def test_an_update_that_moves_the_row_to_another_member_removes_the_former() -> None:
    mapped = map_change(change("u", after=row("a", "new")), STATEFUL, remembered=("a", "old"))
    assert isinstance(mapped, tuple)
    gone, now = mapped[0]
    assert (gone.member, gone.change) == (("a", "old"), Change.REMOVED)
    assert (now.member, now.change) == (("a", "new"), Change.ADDED)
    assert gone.identity != now.identity


@pytest.mark.parametrize(
    ("after", "message"),
    [
        ({"id": 1, "iam_id": "u", "state": "active"}, "'account_id' missing"),
        ({"id": 1, "account_id": "a", "iam_id": "", "state": "active"}, "empty"),
        ({"id": 1, "account_id": "a\x00", "iam_id": "u", "state": "active"}, "control"),
        ({"id": 1, "account_id": "a", "iam_id": "u\ud800", "state": "active"}, "surrogates"),
        ({"id": 1, "account_id": "a", "iam_id": "u", "state": None}, "no known state"),
        ({"id": 1, "account_id": "a", "iam_id": "u"}, "state column 'state' missing"),
    ],
)
def test_unmappable_rows_say_what_is_wrong(after: dict[str, object], message: str) -> None:
    with pytest.raises(Unmappable, match=message):
        map_change(change("c", after=after), STATEFUL)


def test_a_row_key_less_delete_is_unmappable() -> None:
    no_key = RowChange("d", None, None, None, "s", 1, T)
    with pytest.raises(Unmappable, match="REPLICA IDENTITY FULL"):
        map_change(no_key, STATEFUL)


# --- the envelope, as Debezium 3.6's PostgreSQL connector writes it (captured) -------------

SOURCE = {
    "version": "3.6.1.Final",
    "connector": "postgresql",
    "name": "directory",
    "ts_ms": 1796388793288,
    "snapshot": "false",
    "db": "directory",
    "ts_us": 1796388793288965,
    "ts_ns": 1796388793288965000,
    "schema": "public",
    "table": "memberships",
    "txId": 743,
    "lsn": 26660392,
}
AFTER = {
    "id": 1,
    "account_id": "a-1",
    "iam_id": "u-1",
    "state": "active",
    "changed_at": 1796388793288387,
    "updated_at": "2026-12-04T12:53:13.288387Z",
}
COMMIT = datetime(2026, 12, 4, 12, 53, 13, 288965, tzinfo=UTC)


def envelope(op: str, *, schemas: bool, after: Any = AFTER) -> tuple[bytes, bytes]:
    payload = {"before": None, "after": after, "source": SOURCE, "op": op, "ts_ms": 1}
    key: Any = {"id": 1}
    if schemas:
        fields = [
            {"type": "int64", "optional": False, "field": "id"},
            {
                "type": "int64",
                "optional": False,
                "name": "io.debezium.time.MicroTimestamp",
                "field": "changed_at",
            },
            {
                "type": "string",
                "optional": False,
                "name": "io.debezium.time.ZonedTimestamp",
                "field": "updated_at",
            },
        ]
        schema = {
            "type": "struct",
            "fields": [
                {"type": "struct", "optional": True, "field": "before", "fields": fields},
                {"type": "struct", "optional": True, "field": "after", "fields": fields},
            ],
        }
        payload = {"schema": schema, "payload": payload}
        key = {"schema": {"type": "struct", "fields": []}, "payload": key}
    return json.dumps(key).encode(), json.dumps(payload).encode()


def test_a_snapshot_read_sorts_before_a_change_streamed_at_its_lsn() -> None:
    """Debezium gives a snapshot read the LSN of the slot's consistent point, and the first
    change streamed after the snapshot may carry the same LSN: the read comes first."""
    read_key, read_value = envelope("r", schemas=False)
    delete_key, delete_value = envelope("d", schemas=False)
    read = decode_change(read_key, read_value, time_column=None)
    deleted = decode_change(delete_key, delete_value, time_column=None)
    assert read is not None
    assert deleted is not None
    assert read.position < deleted.position


@pytest.mark.parametrize("schemas", [False, True])
@pytest.mark.parametrize("column", ["changed_at", "updated_at", None])
def test_both_converter_forms_decode_alike(schemas: bool, column: str | None) -> None:
    key, value = envelope("c", schemas=schemas)
    decoded = decode_change(key, value, time_column=column)
    assert decoded is not None
    assert decoded.row_key == {"id": 1}
    assert decoded.after is not None
    assert decoded.after["account_id"] == "a-1"
    assert decoded.position == 26660392 * 2 + 1  # a streamed change at LSN 26660392
    assert decoded.commit_time == COMMIT
    assert decoded.source == "debezium://directory/directory/public/memberships"
    expected = None if column is None else datetime(2026, 12, 4, 12, 53, 13, 288387, tzinfo=UTC)
    assert decoded.column_time == expected


def test_a_tombstone_is_nothing() -> None:
    assert decode_change(b'{"id": 1}', None, time_column=None) is None


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[1]",
        b'{"op": "c"}',
        json.dumps({"op": "c", "source": {"name": "x"}}).encode(),
    ],
)
def test_what_is_no_envelope_is_unmappable(value: bytes) -> None:
    with pytest.raises(Unmappable):
        decode_change(b'{"id": 1}', value, time_column=None)


@given(
    st.datetimes(
        min_value=datetime(1970, 5, 1), max_value=datetime(2262, 1, 1), timezones=st.just(UTC)
    )
)
def test_every_integer_encoding_of_a_time_decodes_without_its_schema(when: datetime) -> None:
    micros = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    assert decode_time(micros, None) == when
    assert decode_time(micros * 1000, None) == when
    assert decode_time(micros // 1000, None) == when.replace(
        microsecond=when.microsecond // 1000 * 1000
    )
    assert decode_time(micros, "io.debezium.time.MicroTimestamp") == when
    assert (
        decode_time(when.isoformat().replace("+00:00", "Z"), "io.debezium.time.ZonedTimestamp")
        == when
    )


def record(op: str, account: str, user: str, lsn: int) -> Record:
    source = {**SOURCE, "lsn": lsn}
    after = {"id": 1, "account_id": account, "iam_id": user, "state": "active"}
    payload = {"before": None, "after": after, "source": source, "op": op}
    return Record("t", 0, lsn, 0, b'{"id": 1}', json.dumps(payload).encode(), ())


def test_a_redelivered_older_change_never_removes_the_rows_later_member() -> None:
    """Row 1 names A, then B; the connector re-sends the insert of A: B is not removed."""
    classify = ChangeEventClassifier(STATEFUL, ["t"])
    first = classify(record("c", "a", "A", 10))
    moved = classify(record("u", "a", "B", 20))
    again = classify(record("c", "a", "A", 10))
    assert isinstance(first, RowEvents)
    assert isinstance(moved, RowEvents)
    assert isinstance(again, RowEvents)
    assert [(e.member, e.change) for e in moved.events] == [
        (("a", "A"), Change.REMOVED),
        (("a", "B"), Change.ADDED),
    ]
    assert [(e.member, e.change) for e in again.events] == [(("a", "A"), Change.ADDED)]
    assert again.events[0].identity == first.events[0].identity
