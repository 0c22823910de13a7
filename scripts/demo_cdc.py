"""`make demo-cdc`: membership kept in a directory service's table, no CloudEvents producer.

Kafka Connect with Debezium (`scripts/dev-services up --cdc`) captures the sample table
`directory.public.memberships`; `cleanup-worker run` consumes its change events. The demo
adds two members of a fresh account to that table, gives them keys, deletes one member's row
and updates the other's role, and shows the keys before and after (docs/cdc.md).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from dotenv import dotenv_values
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import keys_table

ROOT = Path(__file__).resolve().parent.parent
console = Console(width=140) if not Console().is_terminal else Console()


def env_of(name: str) -> dict[str, str]:
    return {k: v for k, v in dotenv_values(ROOT / ".dev" / name).items() if v}


async def main() -> int:
    env, cdc = env_of("env"), env_of("cdc.env")
    if "CDC_SOURCE_DATABASE_URL" not in cdc:
        console.print("[red]no .dev/cdc.env: run `scripts/dev-services up --cdc`")
        return 1
    run = uuid.uuid4().hex[:8]
    account, dlq = f"acme-{run}", f"demo-cdc.{run}.dlq"
    admin_url = env["CLEANUP_DATABASE_URL"]
    database_url = urlunsplit(urlsplit(admin_url)._replace(path="/cleanup_demo_cdc"))
    console.rule("[bold]cleanup-worker demo: memberships kept in a table (Debezium)")
    admin_db = await asyncpg.connect(admin_url)
    await admin_db.execute("DROP DATABASE IF EXISTS cleanup_demo_cdc WITH (FORCE)")
    await admin_db.execute("CREATE DATABASE cleanup_demo_cdc")
    await admin_db.close()
    kafka_admin = AIOKafkaAdminClient(bootstrap_servers=env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"])
    await kafka_admin.start()
    # The worker reads CloudEvents topics beside the change events: an empty one here.
    await kafka_admin.create_topics(
        [NewTopic(dlq, 1, 1), NewTopic(f"demo-cdc.{run}.cloudevents", 1, 1)]
    )
    await kafka_admin.close()
    worker_env = {
        **os.environ,
        **env,
        **{k: v for k, v in cdc.items() if k.startswith("CLEANUP_")},
        "CLEANUP_DATABASE_URL": database_url,
        "CLEANUP_KAFKA_TOPICS": f"demo-cdc.{run}.cloudevents",
        "CLEANUP_DLQ_TOPIC": dlq,
        "CLEANUP_KAFKA_GROUP_ID": f"demo-cdc-{run}",
        "CLEANUP_HTTP_PORT": "0",
        "CLEANUP_LOG_FORMAT": "json",
    }
    cli = [sys.executable, "-m", "cleanup_worker"]
    migrate = await asyncio.create_subprocess_exec(
        *cli,
        "migrate",
        env=worker_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if await migrate.wait() != 0:
        console.print("[red]migrate failed")
        return 1

    now = datetime.now(UTC).replace(microsecond=0)
    db = await asyncpg.connect(database_url)
    source = await asyncpg.connect(cdc["CDC_SOURCE_DATABASE_URL"])
    table = cdc["CDC_SOURCE_TABLE"]
    for name, iam_id, age in [("dora-ci", "dora", 9), ("dora-laptop", "dora", 2),
                              ("eve-deploy", "eve", 4)]:  # fmt: skip
        await db.execute(
            "INSERT INTO api_keys (id, account_id, iam_id, name, key_hash, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            uuid.uuid4(), account, iam_id, name, f"sha256:{uuid.uuid4().hex}",
            now - timedelta(days=age),
        )  # fmt: skip
    await source.execute(
        f"INSERT INTO {table} (account_id, iam_id) VALUES ($1, 'dora'), ($1, 'eve')", account
    )
    console.print(f"the directory's table [cyan]{table}[/]: dora and eve are members of {account}")
    console.print(await keys_table(db, "Keys before"))

    log_path = ROOT / ".dev" / "log" / f"demo-cdc-worker-{run}.log"
    with log_path.open("wb") as log_file:
        worker = await asyncio.create_subprocess_exec(
            *cli, "run", env=worker_env, stdout=log_file, stderr=log_file
        )
    console.print(f"started [bold]cleanup-worker run[/] (pid {worker.pid}, log {log_path})")
    await source.execute(f"DELETE FROM {table} WHERE account_id = $1 AND iam_id = 'dora'", account)
    console.print(f"  [bold]DELETE FROM {table} WHERE iam_id = 'dora'[/] (committed)")
    await source.execute(
        f"UPDATE {table} SET role = 'owner' WHERE account_id = $1 AND iam_id = 'eve'", account
    )
    console.print(f"  UPDATE {table} SET role = 'owner' WHERE iam_id = 'eve' (another column)")
    deadline = time.monotonic() + 60
    while await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL") < 2:
        if time.monotonic() > deadline or worker.returncode is not None:
            console.print("[red]the keys were not revoked within 60 s; see the worker log")
            worker.terminate()
            return 1
        await asyncio.sleep(0.2)
    console.print(await keys_table(db, "Keys after: dora's row deleted, eve's role changed"))
    worker.terminate()
    await worker.wait()
    await db.close()
    await source.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
