"""What a chaos run does to the worker: the replicas it starts and kills, the faults it
injects one at a time, and the operator's backfill that runs beside them."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from testkit.outages import start_dev_services, stop_dev_service
from testkit.toxiproxy import Link

LINK_FAULTS = ("latency", "down", "stall", "reset", "bandwidth")
PROCESS_FAULTS = ("kill", "add", "remove")
RESTARTS = ("restart",)


class Replicas:
    """The worker processes, started and stopped by their pids."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.running: list[asyncio.subprocess.Process] = []
        self.started = 0

    async def add(self) -> None:
        self.started += 1
        with (self.logs / f"replica-{self.started}.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cleanup_worker", "run", env=self.env, stderr=log
            )
        self.running.append(process)

    async def stop(self, process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        self.running.remove(process)
        process.send_signal(sig)
        await asyncio.wait_for(process.wait(), 60)

    async def stop_all(self) -> None:
        for process in list(self.running):
            await self.stop(process, signal.SIGTERM)


@dataclass
class Schedule:
    """Draws the faults from the run's seed and injects them."""

    rng: random.Random
    links: dict[str, Link]
    replicas: Replicas
    restarts: bool  # the services are the dev services, which the run may stop and start
    injected: list[str] = field(default_factory=list)

    async def one(self) -> str:
        """Injects one fault, waits it out, and says what it was."""
        kinds = LINK_FAULTS + PROCESS_FAULTS + (RESTARTS if self.restarts else ())
        kind = self.rng.choice(kinds)
        name = self.rng.choice(["database", "broker"])
        seconds = round(self.rng.uniform(1, 6), 1)
        if kind in LINK_FAULTS:
            said = await self._on_link(kind, self.links[name], seconds)
            said = f"{said} on the {name} link for {seconds}s"
        elif kind == "restart":
            service = "postgres" if name == "database" else "kafka"
            started = time.monotonic()
            await stop_dev_service(service)
            await asyncio.sleep(seconds)
            await start_dev_services()
            said = f"{service} restarted (down {time.monotonic() - started:.1f}s)"
        else:
            said = await self._on_replicas(kind, seconds)
        self.injected.append(said)
        return said

    async def _on_link(self, kind: str, link: Link, seconds: float) -> str:
        if kind == "latency":
            latency = self.rng.randrange(20, 300)
            async with link.toxic("latency", latency=latency, jitter=50):
                await asyncio.sleep(seconds)
            return f"latency {latency}±50 ms"
        if kind == "down":
            async with link.down():
                await asyncio.sleep(seconds)
            return "link down"
        if kind == "stall":  # a black hole: data accepted, never delivered, no reset
            async with link.stalled():
                await asyncio.sleep(seconds)
            return "stalled"
        if kind == "reset":  # connections reset by the peer, some in mid-request
            after_ms = self.rng.randrange(0, 500)
            async with link.toxic("reset_peer", stream="upstream", timeout=after_ms):
                await asyncio.sleep(seconds)
            return f"reset_peer after {after_ms} ms"
        rate = self.rng.choice([8, 32, 128])
        async with link.toxic("bandwidth", rate=rate):
            await asyncio.sleep(seconds)
        return f"bandwidth {rate} KB/s"

    async def _on_replicas(self, kind: str, seconds: float) -> str:
        replicas = self.replicas
        if kind == "kill":
            await replicas.stop(self.rng.choice(replicas.running), signal.SIGKILL)
            await asyncio.sleep(seconds)
            await replicas.add()
            return f"SIGKILL a replica, restart after {seconds}s"
        if kind == "add" and len(replicas.running) < 4:
            await replicas.add()
            return "replica added"
        if kind == "remove" and len(replicas.running) > 2:
            await replicas.stop(self.rng.choice(replicas.running), signal.SIGTERM)
            return "replica removed (SIGTERM)"
        return "nothing (replica count at its bound)"


@dataclass
class Backfill:
    """`cleanup-worker backfill --execute` over the legacy accounts, as an operator runs it
    beside the live workers: when a run fails, `--resume --execute` until one completes."""

    env: dict[str, str]
    accounts: tuple[str, ...]
    log: Path
    attempts: list[int] = field(default_factory=list)  # exit codes
    _log_from: int = 0  # where this run's lines start in the (shared) log

    async def run(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        scope = [arg for account in self.accounts for arg in ("--account", account)]
        resumed = False
        while not self.attempts or self.attempts[-1] != 0:
            # After a failure, resume that run; if that fails too (say, the run was never
            # recorded), start a new one: either way each key is examined again.
            resume = ["--resume"] if self.attempts and not resumed else []
            resumed = bool(resume)
            with self.log.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "cleanup_worker",
                    "backfill",
                    "--execute",
                    *resume,
                    "--max-fraction",
                    "1",
                    # Small and paced (a candidate a second: 10-20 s), so that faults land in it.
                    "--batch-size",
                    "5",
                    "--max-rate",
                    "1",
                    *scope,
                    env=self.env,
                    stdout=log,
                    stderr=log,
                )
            self.attempts.append(await process.wait())
            if self.attempts[-1] != 0:
                await asyncio.sleep(1)

    def said(self) -> str:
        if not self.attempts:
            return "backfill not run"
        with self.log.open("rb") as log:
            log.seek(self._log_from)
            reconnects = log.read().count(b'"operation": "database.backfill"')
        return f"backfill exit codes {self.attempts}, {reconnects} reconnections"
