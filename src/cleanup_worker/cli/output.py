"""What the commands' summaries share: JSON on stdout, and a table of counts."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.table import Table


def print_json(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


def counts_table(title: str, summary: dict[str, Any], rows: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("count", justify="right")
    for name in rows:
        table.add_row(name.replace("_", " "), str(summary[name]))
    return table
