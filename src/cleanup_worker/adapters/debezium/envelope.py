"""Debezium's change-event envelope (`before`, `after`, `source`, `op`) as Kafka records carry
it, in both forms of Kafka Connect's JSON converter: with `schemas.enable` (`{"schema": …,
"payload": …}`) and without (the payload alone).

`decode_change` turns a record into a `RowChange` for the pure mapping, None for a tombstone,
or raises `Unmappable` with a message that names what is wrong but never quotes the row.

Times: a time column arrives as Debezium encodes its type — `timestamp` as MicroTimestamp
(µs since the epoch; Timestamp, ms, or NanoTimestamp, ns, under other precision modes),
`timestamptz` as ZonedTimestamp (ISO 8601 text). With schemas the field's schema names the
encoding; without, an integer's magnitude does (ms, µs and ns of any date between May 1970
and 2262 do not overlap), and text is ISO 8601.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup_worker.domain.change_events import RowChange, Unmappable
from cleanup_worker.domain.events import Origin

__all__ = ["decode_change", "decode_time"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIT_BY_SCHEMA = {
    "io.debezium.time.Timestamp": 1_000,
    "org.apache.kafka.connect.data.Timestamp": 1_000,
    "io.debezium.time.MicroTimestamp": 1_000_000,
    "io.debezium.time.NanoTimestamp": 1_000_000_000,
}
_TEXT_SCHEMAS = {"io.debezium.time.ZonedTimestamp", "io.debezium.time.IsoTimestamp"}


def decode_change(
    key: bytes | None,
    value: bytes | None,
    *,
    time_column: str | None,
    origin: Origin | None = None,
) -> RowChange | None:
    """The change a record carries; None for a tombstone (the value null after a delete)."""
    if value is None:
        return None
    envelope, schema = _unwrap(_json(value, "value"), "value")
    if not isinstance(envelope, dict):
        raise Unmappable("value is not a Debezium envelope (a JSON object)")
    op = envelope.get("op")
    if not isinstance(op, str) or "source" not in envelope:
        raise Unmappable("value is not a Debezium change envelope (no op or source)")
    source = envelope["source"]
    if not isinstance(source, dict):
        raise Unmappable("source of the envelope is not an object")
    before, after = _row(envelope, "before"), _row(envelope, "after")
    column_time = None
    if time_column and after is not None and after.get(time_column) is not None:
        field = _field_schema(schema, "after", time_column)
        column_time = decode_time(after[time_column], field, time_column)
    return RowChange(
        op=op,
        before=before,
        after=after,
        row_key=_row_key(key),
        source=_source_name(source),
        position=_position(source, op),
        commit_time=_commit_time(source, envelope),
        column_time=column_time,
        origin=origin,
    )


def decode_time(value: object, schema_name: str | None, column: str = "time") -> datetime:
    """A Debezium-encoded time as an aware datetime (UTC)."""
    if isinstance(value, bool):
        raise Unmappable(f"column {column!r} is not a time")
    if isinstance(value, int):
        unit = _UNIT_BY_SCHEMA.get(schema_name or "") or _unit_by_magnitude(value)
        return _EPOCH + timedelta(microseconds=value * 1_000_000 // unit)
    if isinstance(value, str) and (schema_name is None or schema_name in _TEXT_SCHEMAS):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise Unmappable(f"column {column!r} is not an ISO 8601 time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # a `timestamp` column in text form: UTC
        return parsed.astimezone(UTC)
    raise Unmappable(f"column {column!r} is not a time Debezium encodes ({schema_name})")


def _unit_by_magnitude(value: int) -> int:
    magnitude = abs(value)
    # ms of any date before 2286 stay below 1e13, µs below 1e16; µs and ns of any date after
    # April 1970 are at least 1e13 and 1e16.
    if magnitude >= 10**16:
        return 1_000_000_000
    if magnitude >= 10**13:
        return 1_000_000
    return 1_000


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Unmappable(f"{what} is not JSON") from None


def _unwrap(document: Any, what: str) -> tuple[Any, Mapping[str, Any] | None]:
    """The payload and its schema (schemas.enable=true), or the document itself."""
    if isinstance(document, dict) and set(document) == {"schema", "payload"}:
        schema = document["schema"]
        return document["payload"], schema if isinstance(schema, dict) else None
    return document, None


def _row(envelope: Mapping[str, Any], name: str) -> Mapping[str, object] | None:
    row = envelope.get(name)
    if row is None:
        return None
    if not isinstance(row, dict):
        raise Unmappable(f"{name} of the envelope is not an object")
    return row


def _row_key(key: bytes | None) -> Mapping[str, object] | None:
    if key is None:
        return None
    document, _ = _unwrap(_json(key, "key"), "key")
    if document is None:
        return None
    if not isinstance(document, dict):
        raise Unmappable("key is not a Debezium row key (a JSON object)")
    return document


def _field_schema(schema: Mapping[str, Any] | None, row: str, column: str) -> str | None:
    """The logical type name (e.g. io.debezium.time.MicroTimestamp) of a column, if given."""
    if schema is None:
        return None
    for part in schema.get("fields") or ():
        if isinstance(part, dict) and part.get("field") == row:
            for field in part.get("fields") or ():
                if isinstance(field, dict) and field.get("field") == column:
                    name = field.get("name")
                    return name if isinstance(name, str) else None
    return None


def _source_name(source: Mapping[str, Any]) -> str:
    parts = [source.get(k) for k in ("name", "db", "schema", "table")]
    if not all(isinstance(p, str) and p for p in parts[:2]) or not isinstance(parts[3], str):
        raise Unmappable("source of the envelope lacks name, db or table")
    # Stable across connector restarts: the connector's logical name and the table.
    return "debezium://" + "/".join(str(p) for p in parts if p)


def _position(source: Mapping[str, Any], op: str) -> int:
    """The change's place in the source's history: its LSN, doubled, plus one for a streamed
    change. A snapshot read carries the LSN of the slot's consistent point, which the first
    change streamed after the snapshot can carry too; the read shows the row as it was
    before that change, so at one LSN it must sort first (else a delete right after the
    snapshot would not find the row the snapshot remembered)."""
    lsn = source.get("lsn")
    if isinstance(lsn, int) and not isinstance(lsn, bool) and lsn >= 0:
        return lsn * 2 + (0 if op == "r" else 1)
    raise Unmappable("source of the envelope has no LSN (a PostgreSQL connector gives one)")


def _commit_time(source: Mapping[str, Any], envelope: Mapping[str, Any]) -> datetime:
    # The finest the connector gives: ts_ns/ts_us of the source (Debezium 2.6+), else ts_ms.
    for name, unit in (("ts_us", 1_000_000), ("ts_ns", 1_000_000_000), ("ts_ms", 1_000)):
        value = source.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return _EPOCH + timedelta(microseconds=value * 1_000_000 // unit)
    raise Unmappable("source of the envelope has no commit time (ts_ms)")
