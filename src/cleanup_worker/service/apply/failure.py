"""Why a record could not be applied: what the dead letter, `dlq list` and the logs name.

Its own module because every classifier (CloudEvents, change events) and the batch that
dead-letters returns one; the dead-letter adapter needs only its shape (a Protocol there).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a record could not be applied; the message is safe to log (no payload)."""

    error_class: str
    message: str
