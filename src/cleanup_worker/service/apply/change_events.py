"""Records of the CDC topics (docs/cdc.md): Debezium change events of a membership table, as
membership events. Classification is CPU-only and runs record by record in fetch order, so
it remembers, for a while, which member each row named: a delete that carries only the row
key resolves here when the row changed recently, else from `cdc_rows` (`resolve`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from cleanup_worker.adapters.debezium.envelope import decode_change
from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.domain.change_events import (
    CdcMapping,
    NeedsRowMemory,
    NoChange,
    RowChange,
    RowMember,
    Unmappable,
    map_change,
    never_seen,
)
from cleanup_worker.domain.events import IgnoredEvent, Member, MembershipEvent
from cleanup_worker.service.apply.failure import Failure

__all__ = ["ChangeEventClassifier", "NeedsRowMemory", "RowEvents"]

_MEMO_ROWS = 100_000  # recent rows kept in memory; older ones come from cdc_rows


@dataclass(frozen=True, slots=True)
class RowEvents:
    """What one change event means: its membership events and the row member to remember."""

    events: tuple[MembershipEvent, ...]
    remember: RowMember | None


class ChangeEventClassifier:
    """Maps the records of the CDC topics; one per handler (it remembers recent rows)."""

    def __init__(self, mapping: CdcMapping, topics: Iterable[str]) -> None:
        self.mapping = mapping
        self.topics = frozenset(topics)
        # (source, row key) -> (member, position of the change that named it)
        self._memo: OrderedDict[tuple[str, str], tuple[Member, int]] = OrderedDict()

    def __call__(self, record: Record) -> RowEvents | NeedsRowMemory | IgnoredEvent | Failure:
        try:
            change = decode_change(
                record.key,
                record.value,
                time_column=self.mapping.time_column,
                origin=record.origin,
            )
            if change is None:  # a tombstone: its delete came just before it
                return IgnoredEvent(
                    record.topic, f"{record.partition}/{record.offset}", "tombstone"
                )
            found = map_change(change, self.mapping, self._recall(change))
        except Unmappable as exc:
            return Failure(Unmappable.__name__, f"change event: {exc}")
        return self._note(change, found)

    def resolved(
        self, pending: NeedsRowMemory, remembered: tuple[Member, int] | None
    ) -> RowEvents | Failure:
        """A delete that needed the remembered row, given what `cdc_rows` remembered."""
        member = _before(remembered, pending.change)
        if member is None:
            return Failure(
                Unmappable.__name__, f"change event: {never_seen(pending.change, self.mapping)}"
            )
        try:
            found = map_change(pending.change, self.mapping, member)
        except Unmappable as exc:
            return Failure(Unmappable.__name__, f"change event: {exc}")
        result = self._note(pending.change, found)
        if not isinstance(result, RowEvents):  # a delete given its member always maps
            return Failure(Unmappable.__name__, "change event: delete left unresolved")
        return result

    def _note(
        self,
        change: RowChange,
        found: tuple[tuple[MembershipEvent, ...], RowMember | None] | NoChange | NeedsRowMemory,
    ) -> RowEvents | NeedsRowMemory | IgnoredEvent:
        if isinstance(found, NoChange):
            return IgnoredEvent(change.source, str(change.position), "cdc.no_change")
        if isinstance(found, NeedsRowMemory):
            return found
        events, remember = found
        if remember is not None:
            key = (remember.source, remember.row_key)
            known = self._memo.get(key)
            if known is None or known[1] < remember.position:  # a redelivery says no news
                self._memo[key] = (remember.member, remember.position)
            self._memo.move_to_end(key)
            while len(self._memo) > _MEMO_ROWS:
                self._memo.popitem(last=False)
        return RowEvents(events, remember)

    def _recall(self, change: RowChange) -> Member | None:
        key = change.row_key_text
        return None if key is None else _before(self._memo.get((change.source, key)), change)


def _before(remembered: tuple[Member, int] | None, change: RowChange) -> Member | None:
    """The member a row named before `change`; a later change's member (known when an older
    change is delivered again) says nothing about the row before this one."""
    if remembered is None or remembered[1] >= change.position:
        return None
    return remembered[0]
