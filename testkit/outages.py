"""Outages of the real services: a dev service stopped for a while and started again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from testkit.services import ROOT

# PostgreSQL stops at once on SIGINT (fast shutdown); the broker shuts down cleanly on SIGTERM.
_STOP_SIGNALS = {"postgres": signal.SIGINT, "kafka": signal.SIGTERM}


async def stop_dev_service(name: str) -> None:
    """Stops one of the dev services by its pid file and waits until it is gone."""
    pid_file = ROOT / ".dev" / f"{name}.pid"
    assert pid_file.exists(), f"stopping {name} needs the dev services (scripts/dev-services up)"
    pid = int(pid_file.read_text().strip())
    os.kill(pid, _STOP_SIGNALS[name])
    async with asyncio.timeout(60):
        while await asyncio.to_thread(Path(f"/proc/{pid}").exists):
            await asyncio.sleep(0.1)


async def start_dev_services() -> None:
    """`scripts/dev-services up`: brings back whatever is down, and waits until it answers."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(ROOT / "scripts" / "dev-services"), "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"scripts/dev-services up failed:\n{result.stdout[-3000:]}"


async def restart_dev_service(name: str, pause_s: float) -> None:
    """Stops one of the dev services, waits `pause_s`, and brings it back."""
    await stop_dev_service(name)
    await asyncio.sleep(pause_s)
    await start_dev_services()
