"""On a mapped key table of a million keys, every statement that reads or revokes keys finds
them through an index: the bound values are cast to the columns' own types (bigint here), and
the live marker is written as the owner's partial index states it (docs/key-table.md).

The backfill's assessment is left out on purpose: it is one pass over every key."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup_worker.adapters.postgres import explain, key_table, keys, late_keys, report
from cleanup_worker.adapters.postgres.json_rows import json_rows
from cleanup_worker.adapters.postgres.key_statements import MembershipSource
from tests.integration.test_key_table_mapping import mapped  # noqa: F401 - the fixture

KEYS = 1_000_000
TABLE = "ApiKeys"

_SEED = f"""
INSERT INTO keysvc."ApiKeys" ("tenantId", "userId", "createdAt", status)
SELECT i % 50000, 'user-' || (i % 200000), now() - make_interval(secs => i),
       CASE WHEN i % 10 = 0 THEN 'expired' WHEN i % 3 = 0 THEN 'revoked' ELSE 'active' END
FROM generate_series(1, {KEYS}) AS i
"""


def _scans(node: Any) -> list[tuple[str, str]]:
    """(node type, relation or index) of every scan of the plan."""
    found = []
    if isinstance(node, dict):
        kind = node.get("Node Type", "")
        if "Scan" in kind:
            found.append((kind, node.get("Relation Name") or node.get("Index Name", "")))
        for value in node.values():
            found += _scans(value)
    elif isinstance(node, list):
        for item in node:
            found += _scans(item)
    return found


async def test_every_key_statement_uses_an_index_on_a_million_keys(mapped: Any) -> None:  # noqa: F811
    """R1 (plain and announced with notes), R5, the re-check, R6's review, notes and
    revocation, explain's reads and report's collection read the keys through an index."""
    db = mapped
    await db.execute(_SEED)
    await db.execute('ANALYZE keysvc."ApiKeys"')
    table = key_table.current()
    now = datetime.now(UTC)
    removal = (
        json_rows(
            [{"account_id": "17", "iam_id": "user-17", "removed_at": now, "revoked_by": "x"}]
        ),
    )
    member_of_key, member_keys, one_key = explain._key_reads(table)
    collect, _ = report._key_statements(table)
    statements: dict[str, tuple[str, tuple[Any, ...]]] = {
        "R1": (keys.r1_statement(table, announce=False, note_late_keys=False), removal),
        "R1 announced, late keys noted": (
            keys.r1_statement(table, announce=True, note_late_keys=True),
            removal,
        ),
        "R5": (
            keys.r5_statement(table, MembershipSource.TABLE, announce=True),
            (["5", "6"], "backfill:x", "orphaned"),
        ),
        "R1 re-check": (
            keys.recheck_statement(table, announce=True),
            (now - timedelta(seconds=5),),
        ),
        "R6 review": (keys.late_keys_statement(table), ()),
        "R6": (keys.r6_statement(table, announce=True), (["5"],)),
        "R6 notes": (late_keys._note_from_keys(table), (now - timedelta(seconds=5),)),
        "explain: member of key": (member_of_key, ("5",)),
        "explain: a member's keys": (member_keys, ("17", "user-17")),
        "explain: one key": (one_key, ("5",)),
        "report": (collect, (now - timedelta(days=1), now)),
    }
    unindexed = {}
    for name, (sql, args) in statements.items():
        raw = await db.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
        plan = json.loads(raw) if isinstance(raw, str) else raw
        scans = _scans(plan)
        if any(kind == "Seq Scan" and relation == TABLE for kind, relation in scans):
            unindexed[name] = scans
    assert unindexed == {}
