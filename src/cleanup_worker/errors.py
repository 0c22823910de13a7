"""Every error this package raises on purpose, and the exit code each one ends a command with.

The classes say what the caller should do about a failure; `exit_code` is the one mapping
from them to the process's exit status (docs/design.md, "Interfaces": 2 for a bad setting,
3 when a safety valve refuses, 4 for an unknown member or key). A command that ends normally
exits 0, as Python does.

This module sits below every other one (docs/design.md, "Layers"): errors that carry a
service's values (the backfill's refusal carries its summary) are defined by that service.
"""

from __future__ import annotations

EXIT_OK = 0  # `doctor`: every check passed
EXIT_FAILED = 1  # the command could not do its work (a service down, a bad file, ...)
EXIT_CONFIG = 2  # a setting is missing or invalid
EXIT_REFUSED = 3  # a safety valve refused, or another instance holds the run's lock, or
# `migrate` found a table of another shape and changed nothing
EXIT_NOT_FOUND = 4  # `explain`: no such member or key


class CleanupError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(CleanupError):
    """A setting is missing or invalid; start-up stops with one line naming it."""


class MalformedEvent(CleanupError):
    """A Kafka record is not a valid membership CloudEvent; it belongs in the dead-letter topic.

    The message says what is wrong and never quotes the payload, so it is safe to log.
    """


class MigrationError(CleanupError):
    """The schema cannot be brought to the expected version (e.g. an applied file changed)."""


class ContractMismatch(MigrationError):
    """An existing contract table lacks what the contract needs; `migrate` changed nothing."""


class NotFound(CleanupError):
    """The member or key asked about is unknown to the database."""


class SafetyValveError(CleanupError):
    """A bulk operation would change more than its safety limits allow; nothing was written."""


class AlreadyRunning(CleanupError):
    """Another instance holds the lock that allows only one run at a time."""


class ServiceUnavailable(CleanupError):
    """A required service (database or broker) could not be reached within the allowed time."""


class BackfillError(CleanupError):
    """The backfill cannot do what was asked (e.g. nothing to resume); nothing was written."""


class MembershipFileError(CleanupError):
    """The memberships file is not usable; the message names the line and the problem."""


class WindowError(CleanupError):
    """A WHEN that cannot be parsed, or a window that does not fit the topic."""


def exit_code(error: CleanupError) -> int:
    """The exit status a command ends with when `error` stops it."""
    if isinstance(error, ConfigurationError):
        return EXIT_CONFIG
    if isinstance(error, SafetyValveError | AlreadyRunning | ContractMismatch):
        return EXIT_REFUSED
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    return EXIT_FAILED
