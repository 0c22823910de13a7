"""PostgreSQL errors classified by SQLSTATE: the one place that knows what each class means.

asyncpg raises `PostgresError` subclasses that carry the server's SQLSTATE; errors without one
come from the client side (a dropped socket, a timeout). Three questions are asked of them:

- transient: the same work may succeed if tried again after a pause;
- per event: this event's data cannot be stored, but its neighbours in the batch can;
- lost race: another transaction got there first (a deadlock, a serialization failure, a
  lock wait that timed out); retrying wins it.
"""

from __future__ import annotations

import asyncio

import asyncpg

__all__ = [
    "REVOCATION_IS_PERMANENT",
    "describe",
    "is_login_refused",
    "is_lost_race",
    "is_per_event",
    "is_transient",
    "is_unreachable",
    "sqlstate_of",
]

# The transaction lost to another; it rolled back and released its own locks.
_LOST_RACE = frozenset({"40001", "40P01", "55P03"})
# The connection went away (08), the server is out of resources (53) or restarting (57P).
# 25P03: the server ended a session that sat idle inside a transaction too long (our
# sessions' idle_in_transaction_session_timeout, adapters/postgres/connections.py): that
# session is gone, and so is its transaction, as when the connection drops.
_UNAVAILABLE_CLASSES = ("08", "53", "57P", "25P03")
# Data exceptions (22) and integrity violations (23) belong to the data. A statement timeout
# (57014) is treated alike: the batch is split until the event that is too costly on its own
# (say, the removal of a member with millions of keys) stands alone and is dead-lettered,
# instead of blocking its partition. Anything else that is not transient (permissions, a
# missing table) is a deployment fault and must stop us.
_PER_EVENT_CLASSES = ("22", "23")
_PER_EVENT = frozenset({"57014"})
# Our own class CW (migration 0007's trigger, R4): an UPDATE that would un-revoke a key or
# rewrite its revocation. Neither transient nor per event on purpose: our SQL never does
# that, so from us it is a bug, and it stops the worker.
REVOCATION_IS_PERMANENT = "CW001"


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE the server reported, or None for a client-side error."""
    sqlstate = getattr(exc, "sqlstate", None)
    return (
        sqlstate if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str) else None
    )


def is_lost_race(exc: BaseException) -> bool:
    """True when another transaction won: a deadlock, a serialization failure, a lock timeout."""
    return sqlstate_of(exc) in _LOST_RACE


def is_transient(exc: BaseException) -> bool:
    """True when the same work may succeed if tried again after a pause."""
    sqlstate = sqlstate_of(exc)
    if sqlstate is not None:
        return sqlstate in _LOST_RACE or sqlstate.startswith(_UNAVAILABLE_CLASSES)
    return isinstance(
        exc,
        OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError,
    ) and not isinstance(exc, asyncpg.InterfaceWarning)


def is_login_refused(exc: BaseException) -> bool:
    """True when the server refused the login (class 28: a wrong password, a pg_hba.conf
    rule such as hostssl-only): fixed by whoever rotates the credential, not by our code."""
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and sqlstate.startswith("28")


def is_unreachable(exc: BaseException) -> bool:
    """True when the database could not be reached or went away (refused, reset, timed out,
    the connection lost, the server shutting down or starting): worth a probe, not a backoff.
    A server that answers but is out of resources (53) is not unreachable."""
    sqlstate = sqlstate_of(exc)
    if sqlstate is not None:
        return sqlstate.startswith(("08", "57P", "25P03"))
    return is_transient(exc)


def is_per_event(exc: BaseException) -> bool:
    """True when the failure belongs to one event's data (or cost), not to the database."""
    sqlstate = sqlstate_of(exc)
    return sqlstate is not None and (
        sqlstate in _PER_EVENT or sqlstate.startswith(_PER_EVENT_CLASSES)
    )


def describe(exc: BaseException) -> str:
    """The error's class and SQLSTATE: names the problem without quoting any value."""
    sqlstate = sqlstate_of(exc)
    return type(exc).__name__ if sqlstate is None else f"{type(exc).__name__} (SQLSTATE {sqlstate})"
