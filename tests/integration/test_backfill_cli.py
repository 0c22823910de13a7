"""`cleanup-worker backfill` as an operator runs it: a process, its exit code, its signals."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

import pytest

from testkit.database import key_table
from testkit.events import at
from testkit.key_rows import insert_keys, key_states, revocations, unrevoke_all
from testkit.key_tables import active, member, over_key_tables
from testkit.waiting import eventually

KEYS_PER_USER = 5


@dataclass
class Finished:
    code: int
    stdout: str
    stderr: str

    def summary(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.stdout)
        return loaded


async def start(database_url: str, *args: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "CLEANUP_DATABASE_URL": database_url,
        "CLEANUP_LOG_FORMAT": "json",
        **active().env(),
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cleanup_worker", "backfill", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(process: asyncio.subprocess.Process, timeout: float = 60) -> Finished:
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Finished(process.returncode, stdout.decode(), stderr.decode())


async def backfill(database_url: str, *args: str) -> Finished:
    return await finish(await start(database_url, *args))


async def seed(db: Any, users: int = 250) -> None:
    """`users` users of one account with KEYS_PER_USER keys each; 4 in 25 have no membership
    row, so 16 % of the keys are orphaned: under the default --max-fraction of 0.2."""
    await db.executemany(
        "INSERT INTO account_memberships (account_id, iam_id, state, changed_at) "
        "VALUES ($1, $2, 'active', now())",
        [member("acct", f"u{i}") for i in range(users) if i % 25 >= 4],
    )
    keys = range(users * KEYS_PER_USER)
    await insert_keys(db, [(*member("acct", f"u{i // KEYS_PER_USER}"), at(i)) for i in keys])


async def run_record(db: Any) -> Any:
    return await db.fetchrow(
        "SELECT * FROM backfill_runs WHERE mode = 'execute' ORDER BY started_at DESC LIMIT 1"
    )


async def until_batches(db: Any, batches: int) -> Any:
    """Waits until the latest executing run has committed at least `batches` batches."""
    found: list[Any] = []

    async def reached() -> bool:
        found[:] = [await run_record(db)]
        return found[0] is not None and found[0]["batches"] >= batches

    await eventually(reached, timeout=60, interval=0.01)
    return found[0]


async def test_dry_run_prints_a_json_summary_by_case(database_url: str, db: Any) -> None:
    """A dry run exits 0 and its JSON names the counts by R5 case, accounts and a sample."""
    await seed(db)
    done = await backfill(database_url, "--json")
    assert done.code == 0, done.stderr
    summary = done.summary()
    assert summary["mode"] == "dry_run"
    assert summary["orphaned"] == {
        "no_membership": 200,
        "membership_removed": 0,
        "created_before_member_since": 0,
        "total": 200,
    }
    assert summary["accounts_affected"] == 1
    assert summary["top_accounts"] == [{"account_id": "acct", "keys": 200}]
    assert len(summary["sample_key_ids"]) == 10
    assert summary["revoked"]["total"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-revocations", "199"], "more than --max-revocations 199"),
        (["--max-fraction", "0.1"], "(16.0%), more than --max-fraction 0.1"),
    ],
    ids=["max-revocations", "max-fraction"],
)
async def test_valve_refuses_with_exit_3(
    database_url: str, db: Any, args: list[str], message: str
) -> None:
    """A safety valve refuses before the first write: exit 3, the numbers, no key changed."""
    await seed(db)
    before = await key_table(db)
    done = await backfill(database_url, "--execute", *args)
    assert done.code == 3, done.stderr
    assert message in done.stderr
    assert "nothing was revoked" in done.stderr
    assert await key_table(db) == before
    assert (await run_record(db))["status"] == "refused"


async def test_empty_membership_table_is_refused(database_url: str, db: Any) -> None:
    """With account_memberships empty, even --max-fraction 1 revokes nothing: exit 3."""
    await seed(db)
    await db.execute("DELETE FROM account_memberships")
    before = await key_table(db)
    done = await backfill(database_url, "--execute", "--max-fraction", "1")
    assert done.code == 3, done.stderr
    assert "has no active member" in done.stderr
    assert await key_table(db) == before


async def test_second_concurrent_backfill_is_refused(database_url: str, db: Any) -> None:
    """While one backfill runs, another exits 3 saying so; the first is unaffected."""
    await seed(db)
    first = await start(database_url, "--execute", "--batch-size", "5", "--max-rate", "20")
    try:
        await until_batches(db, 1)
        second = await backfill(database_url)
        assert second.code == 3
        assert "another backfill is running" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
    assert (await finish(first)).code == 0


async def test_sigterm_finishes_the_batch_and_exits_0(database_url: str, db: Any) -> None:
    """SIGTERM lets the current batch commit, records the run as stopped, and exits 0."""
    await seed(db)
    process = await start(database_url, "--execute", "--batch-size", "10", "--max-rate", "100")
    await until_batches(db, 3)
    process.send_signal(signal.SIGTERM)
    done = await finish(process, timeout=20)
    assert done.code == 0, done.stderr
    run = await run_record(db)
    revoked = await db.fetchval(
        "SELECT count(*) FROM api_keys WHERE revoked_by = $1", f"backfill:{run['run_id']}"
    )
    assert run["status"] == "stopped"
    assert revoked == run["revoked_no_membership"] == run["keys_examined"] < 200
    assert await db.fetchval(
        "SELECT bool_and(id <= $1) FROM api_keys WHERE revoked_at IS NOT NULL",
        run["checkpoint_key_id"],
    )


async def final_state(db: Any, run_id: Any) -> list[tuple[Any, ...]]:
    """Every key: its state, reason and revoked_by (the run id made neutral)."""
    states, revoked = await key_states(db), await revocations(db)
    run = f"backfill:{run_id}"
    return [
        (key_id, state, reason, by and by.replace(run, "backfill:RUN"))
        for key_id, state in sorted(states.items())
        for reason, by in [revoked.get(key_id, (None, None))]
    ]


async def sigkill_at(db: Any, process: asyncio.subprocess.Process, batch: int) -> None:
    await until_batches(db, batch)
    process.send_signal(signal.SIGKILL)
    await finish(process)


@pytest.mark.timeout(180)
@over_key_tables
async def test_sigkill_then_resume_equals_an_uninterrupted_run(database_url: str, db: Any) -> None:
    """SIGKILL at a random batch, then --resume: the same keys, reasons and run id as one go."""
    await seed(db, users=500)  # 400 orphaned keys: 40 batches of 10
    before = await key_table(db)
    args = ("--execute", "--batch-size", "10")

    whole = await backfill(database_url, *args, "--json")
    assert whole.code == 0, whole.stderr
    uninterrupted = await final_state(db, whole.summary()["run_id"])
    await unrevoke_all(db)  # every key was live before the run
    assert await key_table(db) == before
    await db.execute("DELETE FROM backfill_runs")  # the next run must not see this one

    batch = random.randrange(1, 38)
    killed = await start(database_url, *args, "--max-rate", "200")
    await sigkill_at(db, killed, batch)
    run = await run_record(db)
    assert run["status"] == "running", f"killed at batch {batch}: {run['status']}"
    assert run["batches"] < 40

    resumed = await backfill(database_url, "--resume", "--execute", "--json")
    assert resumed.code == 0, resumed.stderr
    assert resumed.summary()["run_id"] == str(run["run_id"])
    assert await final_state(db, run["run_id"]) == uninterrupted, f"killed at batch {batch}"
    record = await run_record(db)
    assert (record["status"], record["revoked_no_membership"]) == ("completed", 400)


async def test_malformed_memberships_file_exits_1_naming_the_line(
    database_url: str, db: Any, tmp_path: Any
) -> None:
    """A bad line in --memberships stops the run before any write, naming the line."""
    await seed(db)
    path = tmp_path / "members.csv"
    path.write_text("account_id,iam_id,member_since\nacct,u5,\nacct,u6,last tuesday\n")
    before = await key_table(db)
    done = await backfill(database_url, "--execute", "--memberships", str(path))
    assert done.code == 1
    assert "members.csv line 3: member_since is not an RFC 3339 time" in done.stderr
    assert await key_table(db) == before
    assert await db.fetchval("SELECT count(*) FROM backfill_runs") == 0


async def test_metrics_port_serves_progress_while_running(database_url: str, db: Any) -> None:
    """With --metrics-port, the run's counters can be scraped while it is under way."""
    await seed(db)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await start(
        database_url, "--execute", "--batch-size", "10", "--max-rate", "100",
        "--metrics-port", str(port),
    )  # fmt: skip
    await until_batches(db, 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
    await writer.drain()
    body = (await reader.read()).decode()
    writer.close()
    await writer.wait_closed()
    process.send_signal(signal.SIGTERM)
    assert (await finish(process, timeout=20)).code == 0
    scanned = [
        line for line in body.splitlines() if line.startswith("cleanup_backfill_keys_scanned_total")
    ]
    assert scanned
    assert float(scanned[0].split()[-1]) > 0


@pytest.mark.timeout(180)
async def test_lanes_commit_checkpoints_in_order_through_a_sigkill(
    database_url: str, db: Any
) -> None:
    """With batches written side by side (--lanes 3), a SIGKILL leaves every revoked key at or
    below the checkpoint, and --resume then revokes exactly the rest."""
    await seed(db, users=5000)  # 4 000 orphaned keys: 400 batches of 10
    batch = random.randrange(5, 200)
    killed = await start(database_url, "--execute", "--batch-size", "10", "--lanes", "3")
    await sigkill_at(db, killed, batch)
    run = await run_record(db)
    assert run["status"] == "running", f"killed at batch {batch}: {run['status']}"
    by = f"backfill:{run['run_id']}"
    revoked = await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_by = $1", by)
    assert revoked == run["revoked_no_membership"], f"killed at batch {batch}"
    assert await db.fetchval(
        "SELECT coalesce(bool_and(id <= $1::uuid), true) FROM api_keys WHERE revoked_by = $2",
        run["checkpoint_key_id"],
        by,
    ), f"killed at batch {batch}"

    resumed = await backfill(database_url, "--resume", "--execute", "--lanes", "3", "--json")
    assert resumed.code == 0, resumed.stderr
    record = await run_record(db)
    assert (record["status"], record["revoked_no_membership"]) == ("completed", 4000)
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_by = $1", by) == 4000
