"""Network faults between a worker and the real services, through Toxiproxy's HTTP API.

`toxiproxy_server()` runs the pinned `toxiproxy-server` (`scripts/tools install` builds it)
on a free port; `Toxiproxy.proxy` puts a proxy in front of a service; a `Link` then adds and
removes toxics (latency, timeout, reset_peer, bandwidth, ...) or takes the proxy down and up.

The broker must be reached through its PROXIED listener, which advertises the proxy's own
address (see scripts/dev-services): otherwise the metadata response would send the client
straight to the broker, around the proxy.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from testkit.processes import free_port
from testkit.services import ROOT, dev_env

BINARY = ROOT / ".dev" / "tools" / "bin" / "toxiproxy-server"
HOW_TO_TOXIPROXY = "toxiproxy-server is missing: run `scripts/tools install` (or `make tools`)"
HOW_TO_PROXIED = (
    "the broker has no PROXIED listener: restart the dev services "
    "(`scripts/dev-services down && scripts/dev-services up`), which writes "
    "CLEANUP_DEV_KAFKA_PROXIED and CLEANUP_DEV_KAFKA_PROXY to .dev/env"
)


class ToxiproxyError(RuntimeError):
    """Toxiproxy refused a request (the message is its answer)."""


def kafka_proxy_addresses(bootstrap: str) -> tuple[str, str]:
    """(where the proxy must listen, the PROXIED listener) of the broker at `bootstrap`: from
    CLEANUP_DEV_KAFKA_PROXY and CLEANUP_DEV_KAFKA_PROXIED, else from `.dev/env` when it
    describes that broker."""
    proxy = os.environ.get("CLEANUP_DEV_KAFKA_PROXY")
    proxied = os.environ.get("CLEANUP_DEV_KAFKA_PROXIED")
    env_file = ROOT / ".dev" / "env"
    if not (proxy and proxied) and env_file.exists():
        values = dev_env(env_file)
        if values.get("CLEANUP_KAFKA_BOOTSTRAP_SERVERS") == bootstrap:
            proxy = values.get("CLEANUP_DEV_KAFKA_PROXY")
            proxied = values.get("CLEANUP_DEV_KAFKA_PROXIED")
    if not (proxy and proxied):
        raise ToxiproxyError(HOW_TO_PROXIED)
    return proxy, proxied


def database_address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}"


def through(url: str, listen: str) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{listen}" if userinfo else listen))


@dataclass(frozen=True)
class Toxiproxy:
    """The API of one running toxiproxy-server."""

    url: str

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, f"{self.url}{path}", json=body) as response,
        ):
            text = await response.text()
            if response.status >= 300:
                raise ToxiproxyError(f"{method} {path}: {response.status} {text.strip()}")
            return await response.json(content_type=None) if text else None

    async def proxy(self, name: str, listen: str, upstream: str) -> Link:
        """A new proxy (one of that name is replaced); `listen` may use port 0."""
        if name in await self.names():
            await self.request("DELETE", f"/proxies/{name}")
        created = await self.request(
            "POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream}
        )
        return Link(self, name, created["listen"])

    async def names(self) -> set[str]:
        return set(await self.request("GET", "/proxies"))

    async def reset(self) -> None:
        """Every proxy enabled, every toxic gone."""
        await self.request("POST", "/reset")


@dataclass(frozen=True)
class Link:
    """One proxy: the path from a client to a service that the faults are put on."""

    api: Toxiproxy
    name: str
    listen: str  # host:port that clients connect to

    async def add(
        self, kind: str, *, stream: str = "downstream", toxicity: float = 1.0, **attributes: Any
    ) -> str:
        """Adds a toxic (`kind` is its type: latency, timeout, reset_peer, bandwidth, ...);
        returns its name."""
        name = f"{kind}_{stream}"
        body = {
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        await self.api.request("POST", f"/proxies/{self.name}/toxics", body)
        return name

    async def remove(self, toxic: str) -> None:
        await self.api.request("DELETE", f"/proxies/{self.name}/toxics/{toxic}")

    async def set_enabled(self, enabled: bool) -> None:
        """Disabled: listening stops and every connection through it is closed (a service
        that went away); enabled again: new connections pass."""
        await self.api.request("POST", f"/proxies/{self.name}", {"enabled": enabled})

    @asynccontextmanager
    async def toxic(self, kind: str, **options: Any) -> AsyncIterator[str]:
        """The toxic for the duration of the block."""
        name = await self.add(kind, **options)
        try:
            yield name
        finally:
            await self.remove(name)

    @asynccontextmanager
    async def stalled(self) -> AsyncIterator[None]:
        """A black hole for the duration of the block: the `timeout` toxic with 0 both ways,
        so connections stay open and every byte is held, and no peer hears a reset."""
        async with (
            self.toxic("timeout", stream="upstream", timeout=0),
            self.toxic("timeout", stream="downstream", timeout=0),
        ):
            yield

    @asynccontextmanager
    async def down(self) -> AsyncIterator[None]:
        """The link down for the duration of the block."""
        await self.set_enabled(False)
        try:
            yield
        finally:
            await self.set_enabled(True)


@contextmanager
def toxiproxy_process(log_path: str | os.PathLike[str] = os.devnull) -> Iterator[Toxiproxy]:
    """toxiproxy-server on a free port of 127.0.0.1, stopped (by its pid) afterwards."""
    if not BINARY.exists():
        raise ToxiproxyError(HOW_TO_TOXIPROXY)
    port = free_port()
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [str(BINARY), "-host", "127.0.0.1", "-port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        api = Toxiproxy(f"http://127.0.0.1:{port}")
        _wait_until_answers(api, server)
        yield api
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_until_answers(api: Toxiproxy, server: subprocess.Popen[bytes]) -> None:
    # Blocking on purpose (a fraction of a second): usable from a fixture and from a loop.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ToxiproxyError(f"toxiproxy-server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{api.url}/version", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise ToxiproxyError("toxiproxy-server did not answer within 20 s")
