"""Names the cause of a Kafka failure in words an operator can act on, in one log line.

aiokafka reports a failed connection twice: it logs the real error (a TLS verification
failure, a rejected SCRAM password) on its own logger, then raises a bare
`KafkaConnectionError("Unable to bootstrap from ...")` that has lost it. `ConnectionErrors`
sits on aiokafka's logger, keeps the last such error and drops the library's line, so that the
retry line (see `cleanup_worker.retries`) is the only one, and names the cause.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time

from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

# The lines aiokafka writes when bootstrapping fails, before raising an exception that has
# forgotten why; their text is the cause. (Its reconnects to a known node, "Unable connect to
# node with id ...", are left alone: they are the only trace of an outage mid-run.)
_CONNECTION_FAILED = re.compile(r'^Unable (?:connect to|to request metadata from) "')
# A cause older than this belongs to an earlier failure, not to the exception at hand.
_FRESH_S = 30.0
_NOT_AUTHORIZED = re.compile(r"^Topic .* is not authorized for this client$")
_LIBRARY_LOGGERS = ("aiokafka", "aiokafka.cluster")


class ConnectionErrors(logging.Filter):
    """Keeps the last connection error aiokafka logged, and drops that line and its repeats."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._last: tuple[float, str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONNECTION_FAILED.match(message):
            with self._lock:
                self._last = (time.monotonic(), message)
            return False
        # Said by our retry line (the exception carries the topic), once per retry.
        return not _NOT_AUTHORIZED.match(message)

    def recent(self) -> str | None:
        """The last bootstrap failure aiokafka logged, unless it is stale."""
        with self._lock:
            if self._last is None or time.monotonic() - self._last[0] > _FRESH_S:
                return None
            return self._last[1]


CONNECTION_ERRORS = ConnectionErrors()


def install() -> None:
    """Puts the filter on aiokafka's loggers (idempotent)."""
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if CONNECTION_ERRORS not in logger.filters:
            logger.addFilter(CONNECTION_ERRORS)


def describe(exc: BaseException) -> str | None:
    """The cause of a Kafka or TLS failure in one sentence; None for anything else."""
    if isinstance(exc, TopicAuthorizationFailedError):
        return f"not authorized on topic {_args(exc)}: grant the ACL (docs/security.md)"
    if isinstance(exc, GroupAuthorizationFailedError):
        return f"not authorized on consumer group {_args(exc)}: grant READ on the group"
    if isinstance(exc, ssl.SSLError):
        return _tls(str(exc))
    if isinstance(exc, KafkaConnectionError):
        return _connection(CONNECTION_ERRORS.recent())
    return None


def describe_retry(operation: str, exc: Exception) -> str | None:
    """The retry hook's cause for a Kafka operation (named `kafka.…`); None for others."""
    return describe(exc) if operation.startswith("kafka.") else None


def _args(exc: BaseException) -> str:
    return ", ".join(str(arg) for arg in exc.args) or "(unnamed)"


def _connection(logged: str | None) -> str:
    if logged is None:
        return "broker unreachable"
    text = logged.split(": ", 1)[-1]
    if "SaslAuthenticationFailed" in text or "Authentication failed" in text:
        return "SASL authentication failed: wrong CLEANUP_KAFKA_SASL_USERNAME or _PASSWORD"
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return _tls(text)
    if "closed" in text:
        return (
            "the broker closed the connection during set-up: it does not accept the client "
            "certificate (not signed by a CA it trusts), or the listener speaks another protocol"
        )
    if "Connect call failed" in text or "refused" in text.lower():
        return "broker unreachable: connection refused"
    return f"broker unreachable ({text[:200]})"


def _tls(text: str) -> str:
    if "mismatch" in text or "doesn't match" in text:
        return (
            "the broker's certificate is for another host name than the bootstrap address "
            "(hostname verification)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "the broker's certificate is not trusted: it is not signed by CLEANUP_KAFKA_SSL_CAFILE"
        )
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
        return "TLS handshake failed: is this listener TLS (SSL or SASL_SSL)?"
    return f"TLS handshake failed ({text[:200]})"
