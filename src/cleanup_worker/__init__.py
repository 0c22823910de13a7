"""Revokes the API keys of users removed from an account."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cleanup-worker")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
