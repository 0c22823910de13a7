"""The error hierarchy: what can go wrong, classified by what the caller should do about it."""


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


class SafetyValveError(CleanupError):
    """A bulk operation would change more than its safety limits allow; nothing was written."""


class AlreadyRunning(CleanupError):
    """Another instance holds the lock that allows only one run at a time."""


class ServiceUnavailable(CleanupError):
    """A required service (database or broker) could not be reached within the allowed time."""
