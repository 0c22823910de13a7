"""Every retry is logged once and counted once, through the one hook (cleanup_worker.retries)."""

from __future__ import annotations

import pytest
import stamina
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from structlog.testing import capture_logs

from cleanup_worker.adapters.kafka import errors as kafka_errors
from cleanup_worker.observability import metrics
from cleanup_worker.retries import install_retry_hooks, on_retry, retrying


def counted(operation: str, error: str) -> float:
    """The current value of cleanup_retries_total for these labels."""
    value = metrics.REGISTRY.get_sample_value(
        "cleanup_retries_total", {"operation": operation, "error": error}
    )
    return value or 0.0


async def test_each_retry_logged_once_and_counted_once() -> None:
    """Two failures then a success: two log lines and two counts, naming the operation."""
    install_retry_hooks()
    stamina.set_testing(True, attempts=5)
    failures = iter([ConnectionResetError("secret value"), ConnectionResetError("secret value")])
    before = counted("test.flaky", "ConnectionResetError")
    try:
        with capture_logs() as logs:
            async for attempt in retrying("test.flaky", on=OSError, wait_max=0.01):
                with attempt:
                    error = next(failures, None)
                    if error is not None:
                        raise error
    finally:
        stamina.set_testing(False)
    retries = [line for line in logs if line["event"] == "retry.scheduled"]
    assert len(retries) == 2
    assert len(logs) == 2
    assert {line["operation"] for line in retries} == {"test.flaky"}
    assert {line["error"] for line in retries} == {"ConnectionResetError"}
    assert "secret value" not in repr(logs)
    assert counted("test.flaky", "ConnectionResetError") - before == 2


def test_only_our_hook_is_installed() -> None:
    """stamina's default hooks (repr-logging, a counter nobody serves) are replaced."""
    install_retry_hooks()
    assert stamina.instrumentation.get_on_retry_hooks() == (on_retry,)


async def test_no_retry_no_log() -> None:
    """A first attempt that succeeds logs and counts nothing."""
    install_retry_hooks()
    with capture_logs() as logs:
        async for attempt in retrying("test.fine", on=OSError, wait_max=0.01):
            with attempt:
                pass
    assert logs == []


def test_unbounded_by_default_is_refused_nowhere() -> None:
    """The helper passes its bounds on: attempts=1 means no retry at all."""
    install_retry_hooks()

    async def once() -> None:
        async for attempt in retrying("test.once", on=OSError, wait_max=0.01, attempts=1):
            with attempt:
                raise OSError("down")

    import asyncio  # noqa: PLC0415

    with pytest.raises(OSError, match="down"):
        asyncio.run(once())


async def test_a_kafka_retry_names_its_cause() -> None:
    """A Kafka operation's retry line says what to fix (here: the missing ACL on a topic)."""
    install_retry_hooks(describe=kafka_errors.describe_retry)
    stamina.set_testing(True, attempts=2)

    async def refused() -> None:
        async for attempt in retrying("kafka.test", on=KafkaError, wait_max=0.01):
            with attempt:
                raise TopicAuthorizationFailedError("dlq-topic")

    try:
        with capture_logs() as logs, pytest.raises(TopicAuthorizationFailedError):
            await refused()
    finally:
        stamina.set_testing(False)
    [line] = [line for line in logs if line["event"] == "retry.scheduled"]
    assert "not authorized on topic dlq-topic" in line["cause"]
