"""The `run` process's HTTP surface: /livez, /readyz, /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cleanup_worker.observability import metrics
from cleanup_worker.observability.health import Health


class HealthServer:
    """A small aiohttp server with an explicit start and stop."""

    def __init__(
        self,
        health: Health,
        database_ping: Callable[[], Awaitable[bool]],
        broker_ping: Callable[[], Awaitable[bool]],
        host: str,
        port: int,
    ) -> None:
        self._health = health
        self._ping = database_ping
        self._broker_ping = broker_ping
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _livez(self, _: web.Request) -> web.Response:
        live = self._health.is_live()
        body = f"{'ok' if live else 'wedged'}: last poll {self._health.seconds_since_poll():.1f}s"
        return web.Response(status=200 if live else 503, text=body + "\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        database, broker = await asyncio.gather(self._ping(), self._broker_ping())
        answer = self._health.readiness(database_answers=database, broker_answers=broker)
        metrics.READY.set(1 if answer.ready else 0)
        body = (
            f"{'ready' if answer.ready else 'not ready'}: "
            f"partitions={answer.partitions} "
            f"database={'ok' if answer.database else 'unreachable'} "
            f"broker={'ok' if answer.broker else 'unreachable'}"
            f"{' dead-letters=blocked' if answer.dead_letters_blocked else ''}"
        )
        return web.Response(status=200 if answer.ready else 503, text=body + "\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        # With port 0 (tests) the OS picks one; report what we got.
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def metrics_endpoint(host: str, port: int) -> AsyncIterator[int]:
    """Only /metrics, for one-shot commands (the backfill Job) that Prometheus may scrape
    while they run. Yields the port it listens on."""

    async def serve(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(metrics.REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
