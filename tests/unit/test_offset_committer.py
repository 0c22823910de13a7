"""The background offset committer: order, merging, flush and failures."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from cleanup_worker.service.run.committer import OffsetCommitter, Offsets

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


class Broker:
    """Records each commit; holds each one until released when `gated`."""

    def __init__(self, *, gated: bool = False) -> None:
        self.commits: list[Offsets] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def commit(self, offsets: Offsets) -> None:
        await self.gate.wait()
        self.commits.append(dict(offsets))


async def test_flush_returns_after_everything_queued_is_committed() -> None:
    """flush() waits for the commit of what was queued before it."""
    broker = Broker()
    committer = OffsetCommitter(broker.commit)
    committer.queue({A: 5})
    await committer.flush()
    assert broker.commits == [{A: 5}]
    await committer.close()


async def test_offsets_queued_during_a_commit_are_merged_newest_first() -> None:
    """While one commit is on its way, later offsets merge into one next commit, newest wins."""
    broker = Broker(gated=True)
    committer = OffsetCommitter(broker.commit)
    committer.queue({A: 1})
    await asyncio.sleep(0)  # the task takes the first offsets and waits for the broker
    committer.queue({A: 2, B: 7})
    committer.queue({A: 3})
    broker.gate.set()
    await committer.flush()
    assert broker.commits == [{A: 1}, {A: 3, B: 7}]
    await committer.close()


async def test_a_crash_in_the_commit_reaches_the_loop() -> None:
    """An unexpected error in the background task is raised by the next flush or queue."""

    async def crash(_: Offsets) -> None:
        raise RuntimeError("boom")

    committer = OffsetCommitter(crash)
    committer.queue({A: 1})
    with pytest.raises(RuntimeError, match="boom"):
        await committer.flush()
    with pytest.raises(RuntimeError, match="boom"):
        committer.queue({A: 2})


async def test_nothing_queued_means_nothing_committed() -> None:
    """Empty offsets start no commit, and flush returns at once."""
    broker = Broker()
    committer = OffsetCommitter(broker.commit)
    committer.queue({})
    await committer.flush()
    assert broker.commits == []
    await committer.close()
