"""The command line. Importing a command module registers its command on `app`."""

from cleanup_worker.cli import backfill, dlq, migrate, replay, run  # noqa: F401  - registers the commands
from cleanup_worker.cli.app import app


def main() -> None:
    app(prog_name="cleanup-worker")
