"""Retries: one policy helper and one hook, so every retry is logged and counted once.

Every retried operation in the product goes through `retrying`, which names the operation;
`install_retry_hooks` (called once by the composition root) replaces stamina's default hooks,
which would log the exception's repr (it may carry values) and count into a registry that
`/metrics` never serves, with one log line and one `cleanup_retries_total{operation,error}`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable

import stamina
from stamina.instrumentation import RetryDetails, set_on_retry_hooks

from cleanup_worker.adapters import kafka_errors
from cleanup_worker.logging import get_logger
from cleanup_worker.observability import metrics

__all__ = ["install_retry_hooks", "on_retry", "retrying"]

log = get_logger(__name__)

RetryOn = type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool]


def retrying(
    operation: str,
    *,
    on: RetryOn,
    wait_max: float,
    attempts: int | None = None,
    timeout: float | dt.timedelta | None = None,
) -> AsyncIterator[stamina.Attempt]:
    """`stamina.retry_context` for the named operation (the name the hook logs and counts).

    Unbounded by default: a service that is down must hold work back, never drop it.
    """
    context = stamina.retry_context(on=on, attempts=attempts, timeout=timeout, wait_max=wait_max)
    # A context block is "<context block>" to stamina's hooks; `with_name` is how stamina's own
    # decorator names what it retries.
    return context.with_name(operation, (), {})


def on_retry(details: RetryDetails) -> None:
    """One log line and one count per scheduled retry: the operation and the error's class."""
    error = type(details.caused_by).__name__
    metrics.RETRIES.labels(details.name, error).inc()
    # The cause an operator can act on (a missing ACL, a rejected password, an untrusted
    # certificate): aiokafka's own exception often does not say it.
    cause = kafka_errors.describe(details.caused_by) if details.name.startswith("kafka.") else None
    log.warning(
        "retry.scheduled",
        operation=details.name,
        error=error,
        attempt=details.retry_num,
        wait_s=round(details.wait_for, 3),
        **({"cause": cause} if cause else {}),
    )


def install_retry_hooks() -> None:
    """Makes `on_retry` the only retry hook (idempotent)."""
    set_on_retry_hooks([on_retry])
