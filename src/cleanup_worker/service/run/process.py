"""The `run` process's lifecycle: HTTP first (so probes answer during start-up), then the
consumer that the composition root wires; a stop request drains within the grace."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from typing import Protocol

from cleanup_worker.logging import get_logger
from cleanup_worker.observability.health import Health
from cleanup_worker.observability.http import HealthServer
from cleanup_worker.service.run.consumer import ConsumerLoop

log = get_logger(__name__)

Ping = Callable[[], Awaitable[bool]]


class Companion(Protocol):
    """A loop that runs beside the consumer for as long as it runs: the late-key sweep, and
    the notice relay when notices are on."""

    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ConsumerParts:
    """What the composition root hands the process: the consumer loop, how to ask the
    database, and the loops that run beside the consumer (companions)."""

    consumer_loop: ConsumerLoop
    ping_database: Ping
    # Stopped in this order (`stop_companions`): whatever revokes before the notice relay.
    companions: tuple[Companion, ...] = ()


# Builds (and connects) the consumer, registering what must be closed on `stack`; it may wait
# for the services for as long as they are down.
BuildConsumer = Callable[[Health, AsyncExitStack], Awaitable[ConsumerParts]]


class RunProcess:
    """`cleanup-worker run`: serve the probes, build and start the consumer, run it until asked
    to stop, then drain within `shutdown_grace_s` and close everything in reverse order."""

    def __init__(
        self,
        build: BuildConsumer,
        health: Health,
        *,
        http_host: str,
        http_port: int,
        shutdown_grace_s: float,
    ) -> None:
        self.health = health
        self.consumer_loop: ConsumerLoop | None = None
        self.http: HealthServer | None = None
        self.started = asyncio.Event()
        self._build = build
        self._http_host = http_host
        self._http_port = http_port
        self._shutdown_grace_s = shutdown_grace_s
        self._ping_database: Ping | None = None
        self._stop = asyncio.Event()
        self._companion_failure: BaseException | None = None

    def request_stop(self) -> None:
        self._stop.set()
        if self.consumer_loop is not None:
            self.consumer_loop.request_stop()

    async def _consume(self, stack: AsyncExitStack) -> None:
        parts = await self._build(self.health, stack)
        self._ping_database = parts.ping_database
        self.consumer_loop = parts.consumer_loop
        stack.push_async_callback(self.consumer_loop.stop, 5.0)
        await self.consumer_loop.start()
        companions = [asyncio.create_task(c.run()) for c in parts.companions]
        for task in companions:
            task.add_done_callback(self._companion_done)
        self.started.set()
        if self._stop.is_set():
            self.consumer_loop.request_stop()
        try:
            await self.consumer_loop.run()
        finally:
            await stop_companions(parts.companions, companions)
        if self._companion_failure is not None:
            raise self._companion_failure

    def _companion_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None or self._companion_failure:
            return
        # A companion only ends early on a bug: stop consuming too (drained, so nothing is
        # lost) and exit non-zero, so that the orchestrator restarts the pod.
        self._companion_failure = task.exception()
        log.error("companion.crashed", error=type(self._companion_failure).__name__)
        self.request_stop()

    async def serve(self) -> None:
        async with AsyncExitStack() as stack:
            self.http = HealthServer(
                self.health, self._ping, self._ping_broker, self._http_host, self._http_port
            )
            await self.http.start()
            stack.push_async_callback(self.http.stop)
            consuming = asyncio.create_task(self._consume(stack))
            stopping = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({consuming, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if consuming in done:
                stopping.cancel()
                consuming.result()  # a crash propagates: offsets not committed are redelivered
                return
            if self.consumer_loop is None:
                # Still starting (e.g. waiting for the database): nothing to drain.
                consuming.cancel()
                with suppress(asyncio.CancelledError):
                    await consuming
                return
            try:
                # Shield: a slow drain is given the grace, then abandoned (its offsets stay
                # uncommitted, so the records are redelivered, never lost).
                async with asyncio.timeout(max(1.0, self._shutdown_grace_s - 5.0)):
                    await asyncio.shield(consuming)
            except TimeoutError:
                log.error("worker.drain_timeout", grace_s=self._shutdown_grace_s)
                consuming.cancel()
                with suppress(asyncio.CancelledError):
                    await consuming

    async def _ping_broker(self) -> bool:
        return self.consumer_loop is not None and await self.consumer_loop.ping_broker()

    async def _ping(self) -> bool:
        return self._ping_database is not None and await self._ping_database()


async def stop_companions(
    companions: tuple[Companion, ...], tasks: list[asyncio.Task[None]], timeout_s: float = 5.0
) -> None:
    """Stops the companions one after the other, in the order given, each within `timeout_s`.
    Order matters: the late-key sweep may revoke keys in the sweep it is finishing, and the
    relay's last look at the outbox must come after that, or those notices would wait for the
    next replica to start (maybe minutes, or never when the group is scaled to zero). What a
    companion cut short leaves is safe: the outbox keeps unpublished notices for the next
    relay, and a sweep rolled back is done by the next sweep."""
    for companion, task in zip(companions, tasks, strict=True):
        companion.request_stop()
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_until_signalled(process: RunProcess) -> None:
    """Serves until SIGTERM/SIGINT, then drains and returns (exit code 0)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, process.request_stop)
    try:
        await process.serve()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
