"""The example receiver (examples/cache_invalidation.py) against the real broker: a cached
key is forgotten once the worker revokes it and announces the revocation."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from cleanup_worker.settings import Settings
from examples.cache_invalidation import KeyCache, follow
from testkit.database import seed_key
from testkit.events import at, event
from testkit.kafka import create_topic, publisher
from testkit.processes import running_worker
from testkit.waiting import eventually


async def test_cache_forgets_revoked_keys_and_keeps_the_rest(settings: Settings, db: Any) -> None:
    """Alice's keys leave the cache when their notices arrive; Bob's stay; repeats are no-ops."""
    topic = await create_topic(settings, f"test-notices-{uuid.uuid4().hex[:12]}")
    announcing = settings.model_copy(update={"revocations_topic": topic})
    cache = KeyCache()
    alice = [str(await seed_key(db, "acct", "alice", at(0))) for _ in range(3)]
    bob = str(await seed_key(db, "acct", "bob", at(0)))
    for key in alice:
        cache.remember(key, "acct/alice")
    cache.remember(bob, "acct/bob")
    stop = asyncio.Event()
    receiver = asyncio.create_task(
        follow(cache, settings.require_kafka(), topic, f"cache-{uuid.uuid4().hex[:8]}", stop)
    )
    try:
        async with running_worker(announcing), publisher(announcing) as pub:
            await pub.events([event("removed", "acct", "alice", at(5))])

            async def forgotten() -> bool:
                return not any(key in cache.valid for key in alice)

            await eventually(forgotten)
    finally:
        stop.set()
        await receiver
    assert cache.valid == {bob: "acct/bob"}
    assert cache.seen == {f"revoked:{key}" for key in alice}
    notice: dict[str, object] = {"id": f"revoked:{alice[0]}", "type": "api_key.revoked"}
    assert cache.apply(notice) is False
