"""Kafka failures named in one line: what aiokafka logged is kept, its line dropped."""

from __future__ import annotations

import logging

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from cleanup_worker.adapters.kafka import errors as kafka_errors

BOOTSTRAP_FAILED = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 9093)]")


def library_says(message: str, logger: str = "aiokafka") -> bool:
    """Logs `message` as aiokafka would; True when the line got through the filter."""
    kafka_errors.install()
    record = logging.getLogger(logger).makeRecord(
        logger, logging.ERROR, __file__, 1, message, (), None
    )
    return all(f.filter(record) for f in logging.getLogger(logger).filters)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("logged", "cause"),
    [
        (
            'Unable connect to "h:1": [Error 58] SaslAuthenticationFailed: Authentication failed',
            "SASL authentication failed",
        ),
        (
            'Unable connect to "h:1": [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify '
            "failed: self-signed certificate in certificate chain (_ssl.c:1006)",
            "not signed by CLEANUP_KAFKA_SSL_CAFILE",
        ),
        (
            'Unable connect to "h:1": [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify '
            "failed: IP address mismatch, certificate is not valid for '127.0.0.1'.",
            "for another host name",
        ),
        (
            'Unable connect to "h:1": KafkaConnectionError: Connection at h:1 closed',
            "does not accept the client certificate",
        ),
    ],
)
def test_a_connection_failure_is_named_by_what_aiokafka_logged(logged: str, cause: str) -> None:
    """The bare KafkaConnectionError is described by the error aiokafka logged before it."""
    assert not library_says(logged)
    described = kafka_errors.describe(BOOTSTRAP_FAILED)
    assert described is not None
    assert cause in described


def test_missing_acls_are_named_with_their_resource() -> None:
    """Authorization errors name the topic or group the principal lacks."""
    assert "topic dlq-1" in str(kafka_errors.describe(TopicAuthorizationFailedError("dlq-1")))
    assert "group g" in str(kafka_errors.describe(GroupAuthorizationFailedError("g")))


def test_other_library_lines_pass_and_other_errors_have_no_cause() -> None:
    """Only the lines the retry line replaces are dropped; unrelated errors get no cause."""
    assert library_says("Heartbeat failed for group g", "aiokafka")
    assert not library_says("Topic t is not authorized for this client", "aiokafka.cluster")
    assert kafka_errors.describe(ValueError("x")) is None


def test_reconnects_mid_run_stay_visible() -> None:
    """aiokafka's reconnects to a known node are the trace of an outage: not dropped."""
    assert library_says("Unable connect to node with id 1: [Errno 111] Connect call failed")


def test_a_stale_cause_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bootstrap failure logged long ago does not explain today's connection error."""
    now = [1000.0]
    monkeypatch.setattr("cleanup_worker.adapters.kafka.errors.time.monotonic", lambda: now[0])
    library_says('Unable connect to "h:1": [Error 58] SaslAuthenticationFailed: Authentication')
    now[0] += 600
    assert kafka_errors.describe(BOOTSTRAP_FAILED) == "broker unreachable"
