"""The worker end to end on the real broker and database: the basic story."""

from __future__ import annotations

from typing import Any

from cleanup_worker.settings import Settings
from testkit.database import ledger_size, revoked_keys, seed_key
from testkit.events import at, event
from testkit.kafka import publisher
from testkit.processes import running_worker
from testkit.waiting import eventually


async def test_removal_revokes_the_members_keys(settings: Settings, db: Any) -> None:
    """A removal revokes every key of that member created up to its time, and only those."""
    old = await seed_key(db, "acct", "alice", at(0))
    later = await seed_key(db, "acct", "alice", at(20))
    other = await seed_key(db, "acct", "bob", at(0))
    removal = event("removed", "acct", "alice", at(10))
    async with publisher(settings) as pub, running_worker(settings):
        await pub.events([removal])

        async def applied() -> bool:
            return await ledger_size(db) == 1

        await eventually(applied)
    revoked = await revoked_keys(db)
    assert revoked == {old: ("member_removed", removal.ref)}
    assert later not in revoked
    assert other not in revoked
    row = await db.fetchrow("SELECT * FROM account_memberships")
    assert (row["state"], row["member_since"], row["changed_at"]) == ("removed", None, at(10))
