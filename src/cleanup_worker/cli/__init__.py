"""The command line. Importing a command module registers its command on `app`."""

from cleanup_worker.cli import (  # noqa: F401  - registers the commands
    backfill,
    dlq,
    doctor,
    explain,
    migrate,
    replay,
    report,
    run,
)
from cleanup_worker.cli.app import app


def main() -> None:
    app(prog_name="cleanup-worker")
