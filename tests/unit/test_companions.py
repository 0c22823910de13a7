"""Stopping the consumer's companions: one after the other, in order, each within its time."""

from __future__ import annotations

import asyncio

from cleanup_worker.service.run.process import stop_companions


class Companion:
    """Runs until asked to stop, then takes `finishing_s` to finish; notes when it ended."""

    def __init__(self, name: str, ended: list[str], finishing_s: float = 0.0) -> None:
        self.name = name
        self.asked = asyncio.Event()
        self._ended = ended
        self._finishing_s = finishing_s

    def request_stop(self) -> None:
        self.asked.set()

    async def run(self) -> None:
        try:
            await self.asked.wait()
            await asyncio.sleep(self._finishing_s)
        finally:
            self._ended.append(self.name)


async def test_a_companion_is_asked_to_stop_only_after_the_one_before_it_ended() -> None:
    """The relay's last look comes after the sweep's last revocations."""
    ended: list[str] = []
    sweep, relay = Companion("sweep", ended, finishing_s=0.2), Companion("relay", ended)
    tasks = [asyncio.create_task(c.run()) for c in (sweep, relay)]
    await asyncio.sleep(0)

    stopping = asyncio.create_task(stop_companions((sweep, relay), tasks))
    await asyncio.sleep(0.1)
    assert sweep.asked.is_set()
    assert not relay.asked.is_set()
    await stopping
    assert ended == ["sweep", "relay"]


async def test_a_companion_that_overstays_is_cancelled_and_the_next_still_stops() -> None:
    """One stuck companion costs its own time, not the stop of the others."""
    ended: list[str] = []
    stuck, relay = Companion("stuck", ended, finishing_s=60), Companion("relay", ended)
    tasks = [asyncio.create_task(c.run()) for c in (stuck, relay)]
    await asyncio.sleep(0)

    async with asyncio.timeout(5):
        await stop_companions((stuck, relay), tasks, timeout_s=0.2)
    assert ended == ["stuck", "relay"]
    assert tasks[0].cancelled()
    assert not tasks[1].cancelled()
