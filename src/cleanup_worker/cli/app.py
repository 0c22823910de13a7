"""The `cleanup-worker` Typer application; each command lives in a module of its own."""

from __future__ import annotations

import typer

from cleanup_worker import __version__

app = typer.Typer(
    name="cleanup-worker",
    help="Revokes the API keys of users removed from an account.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Revokes the API keys of users removed from an account (see `COMMAND --help`)."""
