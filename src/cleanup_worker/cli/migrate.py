"""`cleanup-worker migrate`."""

from __future__ import annotations

from typing import Annotated

import typer

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import run_async, settings_or_exit

_PRINT = (
    "Print, and apply nothing, the SQL the owner of the mapped key table (CLEANUP_KEYS_TABLE) "
    "applies: the statements' two indexes, R4's trigger, the worker's grants."
)


@app.command()
def migrate(
    print_key_table_sql: Annotated[
        bool, typer.Option("--print-key-table-sql", help=_PRINT)
    ] = False,
) -> None:
    """Apply the database migrations (idempotent; safe from several pods at once). They create
    our own tables only: a mapped key table is never altered."""
    from cleanup_worker.bootstrap import migrate_database  # noqa: PLC0415 - keeps --help fast
    from cleanup_worker.bootstrap.key_table import key_table_owner_sql  # noqa: PLC0415

    settings = settings_or_exit()
    if print_key_table_sql:
        typer.echo(key_table_owner_sql(settings), nl=False)
        return
    applied = run_async(migrate_database(settings))
    typer.echo(f"applied {len(applied)} migration(s)" if applied else "schema is up to date")
