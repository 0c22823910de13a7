"""Retries: one policy helper and one hook, so every retry is logged and counted once.

Every retried operation in the product goes through `retrying`, which names the operation;
`install_retry_hooks` (called once by the composition root) replaces stamina's default hooks,
which would log the exception's repr (it may carry values) and count into a registry that
`/metrics` never serves, with one log line and one `cleanup_retries_total{operation,error}`.

Outages (issue 14): a retry of a service that is unreachable does not sleep its exponential
backoff (up to `CLEANUP_RETRY_MAX_WAIT_S`), which would sleep through the service's return and
leave removed users' keys working for that long. It waits for that service's `Reachability`
instead: one cheap probe per service and process, at most one every
`CLEANUP_OUTAGE_PROBE_INTERVAL_S` (jittered between half and all of it), wakes every waiting
retry the moment the service answers again. While the service is down the process is gentle
(one connection attempt per probe, not one per retrying operation); once it is back the work
resumes within a probe interval. Other transient errors (lost races, a server out of
resources) keep the exponential backoff.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics

__all__ = ["Reachability", "install_retry_hooks", "on_retry", "retrying"]

log = get_logger(__name__)

RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]
Probe = Callable[[], Awaitable[bool]]
# The cause an operator can act on, for a retried operation's error (None: nothing to add).
# Retries sit below the adapters (docs/design.md, "Layers"), so an adapter that knows its
# library's errors registers one through `install_retry_hooks`.
Describe = Callable[[str, Exception], str | None]


class Reachability:
    """Whether one service answers, as far as this process knows.

    `lost()` (an operation found the service unreachable) starts one probe loop; `wait()`
    returns at once while the service is reachable, else once a probe has succeeded.
    """

    def __init__(
        self,
        service: str,
        probe: Probe,
        *,
        explains: Callable[[Exception], bool],
        interval_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service
        self.explains = explains
        self._probe = probe
        self._interval_s = interval_s
        # Jitter, so that replicas that lost the service together do not probe in step.
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self._back = asyncio.Event()
        self._back.set()
        self._probing: asyncio.Task[None] | None = None
        self._absorbing: list[tuple[logging.Logger, Callable[[logging.LogRecord], bool]]] = []
        self._absorbed = 0  # library warnings folded into the current outage's lines

    @property
    def enabled(self) -> bool:
        """0 turns probing off: retries then back off as for any other transient error."""
        return self._interval_s > 0

    @property
    def reachable(self) -> bool:
        return self._back.is_set()

    def lost(self) -> None:
        """An operation found the service unreachable (idempotent while it stays so)."""
        if not self._back.is_set():
            return
        self._back.clear()
        self._absorbed = 0
        self._probing = asyncio.create_task(self._probe_until_back())

    async def wait(self) -> None:
        await self._back.wait()

    def absorb(self, logger: str, message: str) -> None:
        """Folds a library's own warnings about losing this service (those of `logger` that
        start with `message` and carry an exception `explains` accepts) into our outage
        lines: such a warning starts the probe as `lost()` does, and is counted on the
        `service.reachable` line instead of written. A library that reconnects on its own
        (asyncpg's pool keeps its connection floor) would otherwise write one of them every
        few seconds for as long as the outage lasts. Undone by `close()`."""
        if not self.enabled:
            return

        def fold(record: logging.LogRecord) -> bool:
            cause = record.exc_info[1] if record.exc_info else None
            if not (
                isinstance(cause, Exception)
                and self.explains(cause)
                and record.getMessage().startswith(message)
            ):
                return True
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # logged outside the event loop: no probe to start, so say it
                return True
            self.lost()
            self._absorbed += 1
            return False

        target = logging.getLogger(logger)
        target.addFilter(fold)
        self._absorbing.append((target, fold))

    async def close(self) -> None:
        for target, folding in self._absorbing:
            target.removeFilter(folding)
        self._absorbing.clear()
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)

    async def _probe_until_back(self) -> None:
        log.warning("service.unreachable", service=self.service)
        lost_at, probes = time.monotonic(), 0
        while True:
            await asyncio.sleep(self._rng.uniform(0.5, 1.0) * self._interval_s)
            probes += 1
            try:
                answered = await self._probe()
            except Exception:  # noqa: BLE001 - a probe that breaks must not strand the waiters
                answered = False
            metrics.PROBES.labels(self.service, "ok" if answered else "failed").inc()
            if answered:
                break
        self._back.set()
        log.info(
            "service.reachable",
            service=self.service,
            down_s=round(time.monotonic() - lost_at, 3),
            probes=probes,
            **({"library_warnings_folded": self._absorbed} if self._absorbed else {}),
        )


def retrying(
    operation: str,
    *,
    on: RetryOn,
    wait_max: float,
    attempts: int | None = None,
    timeout: float | dt.timedelta | None = None,
    reachability: Reachability | None = None,
) -> AsyncIterator[stamina.Attempt]:
    """`stamina.retry_context` for the named operation (the name the hook logs and counts).

    Unbounded by default: a service that is down must hold work back, never drop it. With a
    `reachability`, an attempt that found the service unreachable is followed by a wait for its
    probe instead of the backoff, and no attempt starts while the service is known to be down.
    """
    paced = reachability is not None and reachability.enabled
    hook = _paced_by(on, reachability) if paced and reachability else on
    context = stamina.retry_context(on=hook, attempts=attempts, timeout=timeout, wait_max=wait_max)
    # A context block is "<context block>" to stamina's hooks; `with_name` is how stamina's own
    # decorator names what it retries.
    named = context.with_name(operation, (), {})
    return _AfterProbe(named, reachability) if paced and reachability else named


def _paced_by(on: RetryOn, reachability: Reachability) -> Callable[[Exception], bool | float]:
    """A stamina backoff hook: retry what `on` retries; no backoff of its own when the service
    was unreachable (the wait is the probe's, see `_AfterProbe`)."""

    def hook(exc: Exception) -> bool | float:
        retried = isinstance(exc, on) if isinstance(on, type | tuple) else on(exc)
        if retried and reachability.explains(exc):
            reachability.lost()
            return 0.0
        return retried

    return hook


class _AfterProbe:
    """stamina's attempts, each one started only once the service is reachable."""

    def __init__(self, attempts: AsyncIterator[stamina.Attempt], reachability: Reachability):
        self._attempts = attempts
        self._reachability = reachability

    def __aiter__(self) -> _AfterProbe:
        self._attempts = aiter(self._attempts)
        return self

    async def __anext__(self) -> stamina.Attempt:
        attempt = await anext(self._attempts)
        await self._reachability.wait()
        return attempt


def _no_cause(operation: str, exc: Exception) -> None:
    return None


_describe: Describe = _no_cause


def on_retry(details: RetryDetails) -> None:
    """One log line and one count per scheduled retry: the operation and the error's class."""
    error = type(details.caused_by).__name__
    metrics.RETRIES.labels(details.name, error).inc()
    # The cause an operator can act on (a missing ACL, a rejected password, an untrusted
    # certificate): a library's own exception often does not say it.
    cause = _describe(details.name, details.caused_by)
    log.warning(
        "retry.scheduled",
        operation=details.name,
        error=error,
        attempt=details.retry_num,
        wait_s=round(details.wait_for, 3),
        **({"cause": cause} if cause else {}),
    )


def install_retry_hooks(describe: Describe | None = None) -> None:
    """Makes `on_retry` the only retry hook (idempotent); `describe` names the causes."""
    global _describe  # noqa: PLW0603 - one process, one hook
    _describe = describe or _no_cause
    set_on_retry_hooks([on_retry])
