"""The backfill's run record (`backfill_runs`): which run a process works on, new or resumed.

`service/backfill/job.py` runs it; `adapters/postgres/backfill_runs.py` has the SQL.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

from cleanup_worker.adapters.membership_file import LoadedFile
from cleanup_worker.adapters.postgres import backfill_runs
from cleanup_worker.adapters.postgres.backfill_runs import RunRecord
from cleanup_worker.adapters.postgres.connections import Connection
from cleanup_worker.errors import BackfillError
from cleanup_worker.service.backfill.options import (
    BackfillRequest,
    RunOptions,
    new_options,
    resumed_options,
)
from cleanup_worker.service.backfill.summary import Summary

_RESUMABLE = frozenset({"running", "interrupted", "stopped", "refused", "failed"})


async def open_run(
    conn: Connection, request: BackfillRequest, file: LoadedFile | None
) -> tuple[Summary, RunRecord | None]:
    """The run's record: a new one, or (with --resume) the interrupted run it continues."""
    if not request.resume:
        options = new_options(request, file)
        summary = Summary(uuid.uuid4(), request.execute, "running", options)
        await backfill_runs.create_run(conn, summary.run_id, summary.mode, options.as_json())
        return summary, None
    prior = await backfill_runs.latest_execute_run(conn)
    if prior is None:
        raise BackfillError("nothing to resume: no backfill has run with --execute")
    if prior.status not in _RESUMABLE:
        raise BackfillError(f"nothing to resume: the latest run {prior.run_id} completed")
    options = resumed_options(prior.run_id, RunOptions.from_json(prior.options), request, file)
    if request.execute:
        await backfill_runs.restart_run(conn, prior.run_id, options.as_json())
        summary = Summary(prior.run_id, True, "running", options, resumed=True)
        summary.revoked = {reason: n for reason, n in prior.revoked.items() if n}
        return summary, prior
    # A dry run of --resume: what the interrupted run still has to do, in a record of its own.
    options = replace(options, resumes=prior.run_id)
    summary = Summary(uuid.uuid4(), False, "running", options, resumed=True)
    await backfill_runs.create_run(conn, summary.run_id, "dry_run", options.as_json())
    return summary, prior


async def completed_meanwhile(conn: Connection, summary: Summary) -> bool:
    """True when `summary`'s run is recorded as completed: the connection was lost after its
    completion had committed (only the answer was lost), so nothing is left to resume."""
    if not summary.execute:
        return False
    latest = await backfill_runs.latest_execute_run(conn)
    return latest is not None and latest.run_id == summary.run_id and latest.status == "completed"
