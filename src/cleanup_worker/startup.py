"""What every program sets once at start, before it builds anything: its logs, its retry
hooks, and the filter that turns the Kafka client's own log noise into named causes.

Kept apart from the composition root (bootstrap/) so that a command that needs no Kafka
client (migrate, backfill) does not load one just to configure its logs.
"""

from __future__ import annotations

from cleanup_worker.adapters.kafka import errors as kafka_errors
from cleanup_worker.logging import configure_logging
from cleanup_worker.retries import install_retry_hooks
from cleanup_worker.settings import Settings


def configure_process(settings: Settings) -> None:
    """Logs, retry hooks and the Kafka log filter, from the one settings object."""
    configure_logging(settings.log_format, settings.log_level)
    install_retry_hooks(describe=kafka_errors.describe_retry)
    kafka_errors.install()
