"""The settings as `doctor` shows them: every value as loaded, never a secret."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from cleanup_worker.settings import ENV_PREFIX, Settings


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def shown(settings: Settings) -> dict[str, Any]:
    """`CLEANUP_*` name -> value; a secret is only said to be set, a DSN loses its password."""
    view: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name == "database_url":
            value = without_password(value.get_secret_value())
        elif isinstance(value, SecretStr):
            value = "(set)"
        elif isinstance(value, list):
            value = ",".join(value)
        elif value is not None and not isinstance(value, int | float | bool | str):
            value = str(value)
        view[f"{ENV_PREFIX}{name.upper()}"] = value
    return view
