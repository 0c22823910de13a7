"""`cleanup-worker explain` on every rule's case, made by the real worker and backfill through
the real broker and database, and asked as a read-only operator login."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cleanup_worker.errors import EXIT_NOT_FOUND
from cleanup_worker.settings import Settings
from testkit.database import ledger_size, outbox_notices, seed_key
from testkit.events import event
from testkit.kafka import create_topic, publisher
from testkit.operator import operator_login
from testkit.processes import cli, running_worker
from testkit.waiting import eventually
from tests.integration.test_late_keys import create_key, open_transaction, wait_revoked

SETTLE_S = 1.0


def now() -> datetime:
    return datetime.now(UTC)


async def wait_ledger(db: Any, count: int) -> None:
    async def done() -> bool:
        return await ledger_size(db) >= count

    await eventually(done)


async def wait_outbox_empty(db: Any) -> None:
    async def empty() -> bool:
        return await outbox_notices(db) == 0

    await eventually(empty)


async def explain(settings: Settings, url: str, *args: str) -> tuple[int, Any, str]:
    code, out, err = await cli(settings, "explain", *args, "--json", CLEANUP_DATABASE_URL=url)
    return code, json.loads(out) if code == 0 else None, err


def fate(answer: dict[str, Any], key: uuid.UUID) -> dict[str, Any]:
    found: list[dict[str, Any]] = [k for k in answer["keys"] if k["key_id"] == str(key)]
    assert len(found) == 1
    return found[0]


async def test_explain_tells_each_rule_and_state(
    settings: Settings, db: Any, database_url: str
) -> None:
    notices = await create_topic(settings, f"test-notices-{uuid.uuid4().hex[:8]}")
    settings = settings.model_copy(
        update={"late_key_settle_s": SETTLE_S, "revocations_topic": notices}
    )
    old = now() - timedelta(days=30)
    r1_key = await seed_key(db, "acct", "r1", old)
    readded_old = await seed_key(db, "acct", "back", old)
    orphan = await seed_key(db, "acct", "nobody", old)
    removal_r1 = event("removed", "acct", "r1", now() - timedelta(minutes=5))
    removal_back = event("removed", "acct", "back", now() - timedelta(minutes=10))
    readd = event("added", "acct", "back", now() - timedelta(minutes=5))
    async with publisher(settings) as pub, running_worker(settings):
        # R1, and a re-add after a removal.
        await pub.events([removal_r1, removal_back, readd])
        await wait_ledger(db, 3)
        readded_new = await create_key(db, "acct", "back")
        # The R1 re-check: a key whose transaction began before the removal was applied and
        # committed after it.
        async with open_transaction(database_url) as (key_service, creating):
            recheck_key = await create_key(key_service, "acct", "late-commit")
            removal_recheck = event("removed", "acct", "late-commit", now())
            await pub.events([removal_recheck])
            await wait_ledger(db, 4)
            await creating.commit()
        await wait_revoked(db, recheck_key, timeout=10)
        # R6: a key created after its owner's removal was applied.
        removal_r6 = event("removed", "acct", "r6", now())
        await pub.events([removal_r6])
        await wait_ledger(db, 5)
        r6_key = await create_key(db, "acct", "r6")
        await wait_revoked(db, r6_key, timeout=SETTLE_S + 10)
        await wait_outbox_empty(db)
    # R5: a key of a member the worker never heard of, revoked by a backfill run.
    code, _, err = await cli(settings, "backfill", "--execute", "--max-fraction", "1")
    assert code == 0, err

    async with operator_login(database_url) as operator:
        code, r1, err = await explain(settings, operator, "--member", "acct/r1")
        assert code == 0, err
        assert r1["state"] == "removed"
        [applied] = r1["events"]
        assert (applied["source"], applied["event_id"]) == (removal_r1.source, removal_r1.id)
        assert applied["kafka_topic"] == settings.kafka_topics[0]
        assert applied["kafka_offset"] is not None
        assert applied["kafka_timestamp"] is not None
        one = fate(r1, r1_key)
        assert (one["status"], one["rule"]) == ("revoked", "R1")
        assert f"event {removal_r1.source}#{removal_r1.id}" in one["why"]
        assert one["notice"].startswith("published")
        assert r1["alarms"] == []

        code, recheck, _ = await explain(settings, operator, "--key", str(recheck_key))
        assert code == 0
        assert [k["key_id"] for k in recheck["keys"]] == [str(recheck_key)]
        assert fate(recheck, recheck_key)["rule"] == "R1 re-check"
        assert "committed after that removal was applied" in fate(recheck, recheck_key)["why"]

        code, r6, _ = await explain(settings, operator, "--key", str(r6_key))
        assert (fate(r6, r6_key)["status"], fate(r6, r6_key)["rule"]) == ("revoked", "R6")

        code, back, _ = await explain(settings, operator, "--member", "acct/back")
        assert back["state"] == "active"
        assert back["member_since"] is not None
        assert [e["change"] for e in back["events"]] == ["removed", "added"]
        assert fate(back, readded_old)["rule"] == "R1"
        live = fate(back, readded_new)
        assert live["status"] == "live"
        assert live["why"].startswith("live: created")
        assert "after the re-add at" in live["why"]

        code, r5, _ = await explain(settings, operator, "--key", str(orphan))
        assert fate(r5, orphan)["rule"] == "R5"
        assert "backfill run" in fate(r5, orphan)["why"]
        # No relay runs after the backfill: its notice waits in the outbox.
        assert fate(r5, orphan)["notice"].startswith("still in the outbox")

        code, _, err = await explain(settings, operator, "--member", "acct/nobody-at-all")
        assert code == EXIT_NOT_FOUND
        assert "unknown" in err
        code, _, err = await explain(settings, operator, "--key", str(uuid.uuid4()))
        assert code == EXIT_NOT_FOUND
        assert "unknown" in err


async def test_explain_shouts_about_a_live_key_of_a_removed_member(
    settings: Settings, db: Any, database_url: str
) -> None:
    """A key created after the removal, while R6 waits (a settle delay of an hour): live, the
    member removed: "waiting for R6" and a loud line, in text and JSON."""
    settings = settings.model_copy(update={"late_key_settle_s": 3600.0})
    async with publisher(settings) as pub, running_worker(settings):
        removal = event("removed", "acct", "alice", now() - timedelta(minutes=1))
        key = await create_key(db, "acct", "alice")
        await pub.events([removal])
        await wait_ledger(db, 1)

        async def noted() -> bool:
            return bool(await db.fetchval("SELECT count(*) FROM late_key_candidates"))

        await eventually(noted)
    async with operator_login(database_url) as operator:
        code, answer, _ = await explain(settings, operator, "--member", "acct/alice")
        assert code == 0
        waiting = fate(answer, key)
        assert (waiting["status"], waiting["rule"]) == ("waiting_r6", "R6")
        assert waiting["why"].startswith("waiting for R6")
        assert answer["alarms"] == [waiting["alarm"]]
        assert "OF A REMOVED MEMBER" in waiting["alarm"]
        code, text, _ = await cli(
            settings, "explain", "--member", "acct/alice", CLEANUP_DATABASE_URL=operator
        )
        assert code == 0
        assert f"!!! LIVE KEY {key} OF A REMOVED MEMBER" in text
