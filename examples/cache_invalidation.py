"""An example receiver of revocation notices (docs/revocations.md): an in-memory cache of
API-key validations that forgets a key as soon as its `api_key.revoked` notice arrives.

A gateway caches "this key is valid" for a while to spare its key service; without notices
it would keep accepting a revoked key until the entry expires. Run it beside a gateway:

    python -m examples.cache_invalidation --bootstrap 127.0.0.1:19092 --topic api-key-revocations

What a receiver must do, and this one does: read the topic in its own consumer group,
deduplicate by the notice `id` (delivery is at least once), need no ordering (a revocation
is final), and commit its offsets only after it acted on the notices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer

NOTICE_TYPE = "api_key.revoked"


@dataclass
class KeyCache:
    """Validated keys by id (a real cache also keeps an expiry; notices make it exact)."""

    valid: dict[str, str] = field(default_factory=dict)  # key id -> owner
    seen: set[str] = field(default_factory=set)  # notice ids already acted on

    def remember(self, key_id: str | int, owner: str) -> None:
        # A notice's key_id is the id as text ('12345' for an integer id, a UUID's usual
        # form): a cache that holds integer ids keys them by the same text.
        self.valid[str(key_id)] = owner

    def apply(self, notice: dict[str, object]) -> bool:
        """Forgets the notice's key; False for a repeat or another type of event."""
        notice_id = str(notice.get("id"))
        if notice.get("type") != NOTICE_TYPE or notice_id in self.seen:
            return False
        self.seen.add(notice_id)
        data = notice.get("data")
        if isinstance(data, dict):
            self.valid.pop(str(data.get("key_id")), None)
        return True


async def follow(
    cache: KeyCache, bootstrap: str, topic: str, group: str, stop: asyncio.Event
) -> None:
    """Applies every notice on `topic` to `cache` until `stop` is set."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            _apply_all(cache, (r.value for records in batches.values() for r in records))
            if batches:
                await consumer.commit()  # only after acting on them: at least once
    finally:
        await consumer.stop()


def _apply_all(cache: KeyCache, values: Iterable[bytes | None]) -> None:
    for value in values:
        if value is None:
            continue
        try:
            notice = json.loads(value)
        except ValueError:
            continue  # not a notice; a real receiver would count it
        if isinstance(notice, dict):
            cache.apply(notice)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="example-key-cache")
    args = parser.parse_args()
    asyncio.run(follow(KeyCache(), args.bootstrap, args.topic, args.group, asyncio.Event()))


if __name__ == "__main__":
    main()
