"""Offset commits off the batches' path: the next batch starts while the broker answers.

The consumer loop hands over the offsets of a batch only once it and every batch before it
have committed in the database; this task sends them, newest per partition (a commit covers
everything before it, so offsets queued while one is on its way are merged into the next).
Waiting for the broker's answer before starting the next batch cost one round trip to the
group coordinator on every batch's path, a good part of the revocation lag at a trickle
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition

Offsets = dict[TopicPartition, int]


class OffsetCommitter:
    """One background task that commits what `queue` was given, in the order given."""

    def __init__(self, commit: Callable[[Offsets], Awaitable[None]]) -> None:
        self._commit = commit
        self._pending: Offsets = {}
        self._queued = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def queue(self, offsets: Offsets) -> None:
        """Commits `offsets` soon, after whatever was queued before."""
        self._raise_if_failed()
        if not offsets:
            return
        self._pending.update(offsets)
        self._idle.clear()
        self._queued.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="offset-committer")

    async def flush(self) -> None:
        """Returns once everything queued so far has been committed (or given up on)."""
        if self._task is None:
            return
        idle = asyncio.create_task(self._idle.wait())
        await asyncio.wait({idle, self._task}, return_when=asyncio.FIRST_COMPLETED)
        idle.cancel()
        self._raise_if_failed()

    async def close(self) -> None:
        """Stops the task; what was still queued is not committed (redelivered, idempotent)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _raise_if_failed(self) -> None:
        # `commit` handles the broker's refusals itself; anything else is a crash of the
        # worker and must not be lost in a background task.
        if self._task is not None and self._task.done() and not self._task.cancelled():
            error = self._task.exception()
            if error is not None:
                raise error

    async def _run(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._pending:
                offsets, self._pending = self._pending, {}
                await self._commit(offsets)
            self._idle.set()
