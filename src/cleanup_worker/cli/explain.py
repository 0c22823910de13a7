"""`cleanup-worker explain`."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import typer

from cleanup_worker.cli.app import app
from cleanup_worker.cli.common import fail, run_async, settings_or_exit
from cleanup_worker.errors import EXIT_CONFIG

_EPILOG = (
    "Read-only; runs as a login with the cleanup_operator role's read grants "
    "(docs/database-role.md). Exit codes: 0 answered; 1 failed; 2 configuration error or bad "
    "arguments; 4 unknown member or key. Operator guide: docs/operations.md#explain."
)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@app.command(epilog=_EPILOG)
def explain(
    *,
    member: Annotated[
        str | None,
        typer.Option("--member", metavar="ACCOUNT/IAM_ID", help="The member to explain."),
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", metavar="KEY_ID", help="The key (its id) to explain.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Why a key is live or revoked: a member's history, and each key's fate and rule."""
    if (member is None) == (key is None):
        fail("give exactly one of --member ACCOUNT/IAM_ID or --key KEY_ID", EXIT_CONFIG)
    target: tuple[str, str] | None = None
    key_id: str | None = None
    if member is not None:
        account, _, iam_id = member.partition("/")
        if not account or not iam_id:
            fail("--member must be ACCOUNT/IAM_ID", EXIT_CONFIG)
        target = (account, iam_id)
    elif not str(key).strip():
        fail("--key must be a key id", EXIT_CONFIG)
    else:
        # Any text: the key table's id may be a UUID, an integer or text (docs/key-table.md).
        key_id = str(key).strip()
    from cleanup_worker.bootstrap import explain as run_explain  # noqa: PLC0415 - fast --help

    settings = settings_or_exit()
    answer = run_async(run_explain(settings, member=target, key_id=key_id))
    if as_json:
        document = _plain(asdict(answer))
        document["alarms"] = answer.alarms
        typer.echo(json.dumps(document, indent=2))
        return
    typer.echo(f"member {answer.account_id}/{answer.iam_id}")
    typer.echo(
        f"  now: {answer.state or 'no membership row'}"
        + (f", member since {_plain(answer.member_since)}" if answer.member_since else "")
        + (f", changed at {_plain(answer.changed_at)}" if answer.changed_at else "")
    )
    if answer.baseline:
        b = _plain(answer.baseline)
        typer.echo(
            f"  baseline (the row before the first event): {b['state']}, member since "
            f"{b['member_since']}, changed at {b['changed_at']}"
        )
    typer.echo(f"  history applied ({len(answer.events)} event(s)):")
    for e in map(_plain, answer.events):
        where = (
            f"{e['kafka_topic']}[{e['kafka_partition']}]@{e['kafka_offset']}"
            if e["kafka_topic"]
            else "not from Kafka (e.g. a redrive)"
        )
        typer.echo(
            f"    {e['change']:<7} at {e['event_time']}  event {e['source']}#{e['event_id']}\n"
            f"            in Kafka {e['kafka_timestamp'] or '-'}  applied {e['applied_at']}"
            f"  from {where}"
        )
    typer.echo(f"  keys ({len(answer.keys)}):")
    for k in answer.keys:
        typer.echo(f"    {k.key_id} {k.name!r} created {_plain(k.created_at)}: {k.status}")
        typer.echo(f"      {k.why}")
        typer.echo(f"      notice: {k.notice}")
    for alarm in answer.alarms:
        typer.secho(f"!!! {alarm}", err=False, bold=True, fg="red")
