"""Which database errors are worth another try (classified by SQLSTATE, as asyncpg reports)."""

from __future__ import annotations

import asyncpg
import pytest

from cleanup_worker.adapters.postgres import is_transient


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.SerializationError,  # 40001
        asyncpg.DeadlockDetectedError,  # 40P01
        asyncpg.AdminShutdownError,  # 57P01
        asyncpg.CannotConnectNowError,  # 57P03
        asyncpg.ConnectionFailureError,  # 08006
        asyncpg.LockNotAvailableError,  # 55P03
        asyncpg.TooManyConnectionsError,  # 53300
    ],
)
def test_transient_sqlstates_are_retried(error: type[asyncpg.PostgresError]) -> None:
    """Lost connections, restarts, lost races and lock waits are retried."""
    assert is_transient(error("x"))


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UniqueViolationError,  # 23505
        asyncpg.InsufficientPrivilegeError,  # 42501
        asyncpg.UndefinedTableError,  # 42P01
        asyncpg.QueryCanceledError,  # 57014: isolated per event instead
        asyncpg.DataError,  # 22000
    ],
)
def test_permanent_sqlstates_are_not_retried(error: type[asyncpg.PostgresError]) -> None:
    """Data, permission and schema errors would fail the same way again."""
    assert not is_transient(error("x"))


def test_network_errors_are_retried() -> None:
    """A refused or reset connection is retried."""
    assert is_transient(ConnectionRefusedError())
    assert is_transient(asyncpg.ConnectionDoesNotExistError("closed"))
