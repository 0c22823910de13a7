"""Database errors classified by SQLSTATE (adapters/postgres/sqlstate.py), one predicate at a
time."""

from __future__ import annotations

import asyncpg
import pytest

from cleanup_worker.adapters.postgres.sqlstate import (
    describe,
    is_login_refused,
    is_lost_race,
    is_per_event,
    is_transient,
    is_unreachable,
    sqlstate_of,
)

LOST_RACES: list[type[asyncpg.PostgresError]] = [
    asyncpg.SerializationError,  # 40001
    asyncpg.DeadlockDetectedError,  # 40P01
    asyncpg.LockNotAvailableError,  # 55P03
]
UNAVAILABLE: list[type[asyncpg.PostgresError]] = [
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CannotConnectNowError,  # 57P03
    asyncpg.ConnectionFailureError,  # 08006
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.IdleInTransactionSessionTimeoutError,  # 25P03: the server ended the session
]
PER_EVENT: list[type[asyncpg.PostgresError]] = [
    asyncpg.UniqueViolationError,  # 23505
    asyncpg.NotNullViolationError,  # 23502
    asyncpg.DataError,  # 22000
    asyncpg.StringDataRightTruncationError,  # 22001
    asyncpg.QueryCanceledError,  # 57014: a statement timeout, isolated per event
]
DEPLOYMENT_FAULTS: list[type[asyncpg.PostgresError]] = [
    asyncpg.InsufficientPrivilegeError,  # 42501
    asyncpg.UndefinedTableError,  # 42P01
    asyncpg.UndefinedColumnError,  # 42703
]


@pytest.mark.parametrize("error", LOST_RACES + UNAVAILABLE)
def test_transient(error: type[asyncpg.PostgresError]) -> None:
    """Lost races, lost connections, restarts and exhausted resources are transient."""
    assert is_transient(error("x"))


@pytest.mark.parametrize("error", PER_EVENT + DEPLOYMENT_FAULTS)
def test_not_transient(error: type[asyncpg.PostgresError]) -> None:
    """Data, cost, permission and schema errors would fail the same way again."""
    assert not is_transient(error("x"))


def test_client_side_errors_are_transient() -> None:
    """A refused or reset connection, a timeout, a closed connection: transient."""
    assert is_transient(ConnectionRefusedError())
    assert is_transient(TimeoutError())
    assert is_transient(asyncpg.ConnectionDoesNotExistError("closed"))


def test_other_exceptions_are_not_transient() -> None:
    """A bug in our code is not retried."""
    assert not is_transient(ValueError("bug"))
    assert not is_transient(KeyError("bug"))


@pytest.mark.parametrize("error", LOST_RACES)
def test_lost_race(error: type[asyncpg.PostgresError]) -> None:
    """Deadlocks, serialization failures and lock timeouts are races lost to another."""
    assert is_lost_race(error("x"))


@pytest.mark.parametrize("error", UNAVAILABLE + PER_EVENT + DEPLOYMENT_FAULTS)
def test_not_lost_race(error: type[asyncpg.PostgresError]) -> None:
    """Everything else is not a race."""
    assert not is_lost_race(error("x"))
    assert not is_lost_race(ConnectionResetError())


@pytest.mark.parametrize("error", PER_EVENT)
def test_per_event(error: type[asyncpg.PostgresError]) -> None:
    """Data exceptions, integrity violations and statement timeouts belong to one event."""
    assert is_per_event(error("x"))


@pytest.mark.parametrize("error", LOST_RACES + UNAVAILABLE + DEPLOYMENT_FAULTS)
def test_not_per_event(error: type[asyncpg.PostgresError]) -> None:
    """Races, outages and deployment faults are not the event's fault."""
    assert not is_per_event(error("x"))
    assert not is_per_event(OSError())


def test_sqlstate_of_client_side_error_is_none() -> None:
    """Only the server's errors carry a SQLSTATE."""
    assert sqlstate_of(asyncpg.UniqueViolationError("x")) == "23505"
    assert sqlstate_of(ConnectionResetError()) is None


def test_describe_names_class_and_sqlstate_never_the_message() -> None:
    """The description is safe to log: it never carries the server's message."""
    text = describe(asyncpg.UniqueViolationError("duplicate key value (secret)=(x)"))
    assert text == "UniqueViolationError (SQLSTATE 23505)"
    assert describe(ConnectionResetError("peer said secret")) == "ConnectionResetError"


@pytest.mark.parametrize(
    "error", [asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError]
)
def test_refused_login_is_its_own_class(error: type[asyncpg.PostgresError]) -> None:
    """A wrong password or a pg_hba.conf refusal (class 28) is a refused login, not transient."""
    assert is_login_refused(error("x"))
    assert not is_transient(error("x"))


@pytest.mark.parametrize("error", LOST_RACES + UNAVAILABLE + DEPLOYMENT_FAULTS)
def test_other_errors_are_no_refused_login(error: type[asyncpg.PostgresError]) -> None:
    """Nothing outside class 28 counts as a refused login."""
    assert not is_login_refused(error("x"))


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.ConnectionDoesNotExistError("closed"),
        asyncpg.AdminShutdownError("x"),  # 57P01
        asyncpg.CannotConnectNowError("x"),  # 57P03
        asyncpg.ConnectionFailureError("x"),  # 08006
        asyncpg.IdleInTransactionSessionTimeoutError("x"),  # 25P03
    ],
)
def test_unreachable(error: Exception) -> None:
    """Refused, reset, timed out, closed, shutting down, starting: the database is away."""
    assert is_unreachable(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.TooManyConnectionsError("x"),  # 53300: it answers, but is out of resources
        asyncpg.DeadlockDetectedError("x"),  # lost race
        asyncpg.UniqueViolationError("x"),
        ValueError("x"),
    ],
)
def test_not_unreachable(error: Exception) -> None:
    """A database that answers (busy, a lost race, bad data) is not probed for."""
    assert not is_unreachable(error)
