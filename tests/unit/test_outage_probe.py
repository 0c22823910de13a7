"""After an outage, retries wait for the service's probe, not for their backoff (issue 14)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from structlog.testing import capture_logs

from cleanup_worker.retries import Reachability, install_retry_hooks, retrying
from testkit.metrics import sample
from testkit.waiting import eventually


class Service:
    """A service that is down until `back()`; counts probes and attempts."""

    def __init__(self) -> None:
        self.up = False
        self.probes = 0
        self.attempts = 0

    async def probe(self) -> bool:
        self.probes += 1
        return self.up

    def call(self) -> None:
        self.attempts += 1
        if not self.up:
            raise ConnectionRefusedError("down")


def reachability(service: Service, interval_s: float = 0.01) -> Reachability:
    return Reachability(
        "test",
        service.probe,
        explains=lambda exc: isinstance(exc, ConnectionError),
        interval_s=interval_s,
        rng=random.Random(7),
    )


async def _retry(service: Service, reach: Reachability, operation: str = "test.op") -> None:
    async for attempt in retrying(operation, on=OSError, wait_max=600, reachability=reach):
        with attempt:
            service.call()


def _probed(service: Service, probes: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return service.probes >= probes

    return check


async def _bring_back_after_probes(service: Service, probes: int) -> None:
    await eventually(_probed(service, probes), timeout=10, interval=0.001)
    service.up = True


async def test_unreachable_retry_waits_for_the_probe_not_the_backoff() -> None:
    """With a 600 s backoff cap, the retry is scheduled with no backoff of its own and runs
    again as soon as a probe finds the service back."""
    install_retry_hooks()
    service = Service()
    reach = reachability(service)
    with capture_logs() as logs:
        await asyncio.wait_for(
            asyncio.gather(_retry(service, reach), _bring_back_after_probes(service, 3)), 30
        )
    await reach.close()
    assert service.attempts == 2  # the failure, then one attempt once the probe said "back"
    assert service.probes == 4  # three unanswered probes, then the one that found it back
    [retry] = [line for line in logs if line["event"] == "retry.scheduled"]
    assert retry["wait_s"] == 0
    events = [line["event"] for line in logs]
    assert events.index("service.unreachable") < events.index("service.reachable")


async def test_one_probe_loop_wakes_every_waiting_retry() -> None:
    """Five operations held up by the same outage share one probe loop, and each makes one
    attempt after the return, not one per probe."""
    install_retry_hooks()
    service = Service()
    reach = reachability(service)
    before = sample("cleanup_outage_probes_total", {"service": "test", "result": "failed"})
    await asyncio.wait_for(
        asyncio.gather(
            *(_retry(service, reach) for _ in range(5)), _bring_back_after_probes(service, 4)
        ),
        30,
    )
    await reach.close()
    # The first operation's failure; the other four had not tried yet and waited; then five
    # successes.
    assert service.attempts == 6
    assert service.probes == 5
    failed = sample("cleanup_outage_probes_total", {"service": "test", "result": "failed"})
    assert failed - before == 4


async def test_no_attempt_while_the_service_is_known_down() -> None:
    """An operation that starts during an outage another one found waits for the probe
    before its first attempt."""
    install_retry_hooks()
    service = Service()
    reach = reachability(service)
    first = asyncio.create_task(_retry(service, reach))

    async def lost() -> bool:
        return not reach.reachable

    await eventually(lost, timeout=10, interval=0.001)
    second = asyncio.create_task(_retry(service, reach))
    # Three probes later the second operation has long had its turn to try, had it not waited.
    probes = service.probes
    await eventually(_probed(service, probes + 3), timeout=10, interval=0.001)
    assert not second.done()
    assert service.attempts == 1  # only the first operation's failed attempt
    service.up = True
    await asyncio.wait_for(asyncio.gather(first, second), 30)
    await reach.close()
    assert service.attempts == 3


async def test_other_transient_errors_keep_their_backoff() -> None:
    """An error that does not say "unreachable" (say, a lost race) backs off as before."""
    install_retry_hooks()
    service = Service()
    reach = reachability(service)
    failures = iter([TimeoutError("lost race")])
    with capture_logs() as logs:
        async for attempt in retrying("test.race", on=OSError, wait_max=0.05, reachability=reach):
            with attempt:
                error = next(failures, None)
                if error is not None:
                    raise error
    await reach.close()
    [retry] = [line for line in logs if line["event"] == "retry.scheduled"]
    assert retry["wait_s"] > 0
    assert service.probes == 0
    assert reach.reachable


async def test_interval_zero_turns_the_probe_off() -> None:
    """CLEANUP_OUTAGE_PROBE_INTERVAL_S=0: an unreachable service is backed off from as any
    transient error (the policy before issue 14), and never probed."""
    install_retry_hooks()
    service = Service()
    reach = reachability(service, interval_s=0)
    failures = iter([ConnectionRefusedError("down")])
    with capture_logs() as logs:
        async for attempt in retrying("test.off", on=OSError, wait_max=0.05, reachability=reach):
            with attempt:
                error = next(failures, None)
                if error is not None:
                    raise error
    [retry] = [line for line in logs if line["event"] == "retry.scheduled"]
    assert retry["wait_s"] > 0
    assert service.probes == 0
