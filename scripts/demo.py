"""The README's demo: the whole story on the local dev services, end to end.

Seeds an account with users and keys, starts `cleanup-worker run` as a real process,
publishes a short story of CloudEvents, and shows the keys before and after plus the
dead letter. Run it with `make demo` (which installs and starts the services first).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from dotenv import dotenv_values
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
console = Console()
if not console.is_terminal:  # piped or in CI: wide enough that the tables stay readable
    console = Console(width=140)


def dev_env() -> dict[str, str]:
    """The variables `scripts/dev-services up` wrote (python-dotenv reads the `export` lines)."""
    values = dotenv_values(ROOT / ".dev" / "env")
    return {key: value for key, value in values.items() if key.startswith("CLEANUP_") and value}


def cloudevent(kind: str, iam_id: str, when: datetime, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": "/accounts",
            "type": kind,
            "time": when.isoformat(),
            "datacontenttype": "application/json",
            "data": {"account_id": "acme", "iam_id": iam_id, "actor": "IBMid-admin"},
        }
    ).encode()


async def keys_table(db: Any, title: str) -> Table:
    table = Table(title=title)
    for column in ("key", "user", "created", "revoked", "reason", "revoked by"):
        table.add_column(column)
    for row in await db.fetch(
        "SELECT name, iam_id, created_at, revoked_at, revocation_reason, revoked_by "
        "FROM api_keys ORDER BY iam_id, created_at"
    ):
        table.add_row(
            row["name"],
            row["iam_id"],
            f"{row['created_at']:%Y-%m-%d %H:%M}",
            "yes" if row["revoked_at"] else "no",
            row["revocation_reason"] or "",
            row["revoked_by"] or "",
            style="red" if row["revoked_at"] else "green",
        )
    return table


async def notices_table(bootstrap: str, topic: str, expected: int, db: Any) -> Table:
    """The revocation notices on `topic` (what gateways and caches hear), one per key."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer.assign(partitions)
    notices: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 30
    while len(notices) < expected and time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            for record in records:
                body = json.loads(record.value)
                notices[body["id"]] = body
    await consumer.stop()
    names = {str(r["id"]): r["name"] for r in await db.fetch("SELECT id, name FROM api_keys")}
    table = Table(title=f"Revocation notices on {topic} (api_key.revoked CloudEvents)")
    for column in ("notice id", "key", "reason", "revoked by"):
        table.add_column(column)
    for notice_id, body in sorted(notices.items()):
        data = body["data"]
        key = names.get(data["key_id"], data["key_id"])
        table.add_row(notice_id[:20] + "…", key, data["reason"], data["revoked_by"])
    return table


async def main() -> int:
    env = dev_env()
    run = uuid.uuid4().hex[:8]
    topic, dlq = f"demo.account-membership.{run}", f"demo.account-membership.{run}.dlq"
    notices_topic = f"demo.api-key-revocations.{run}"
    bootstrap = env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]
    admin_url = env["CLEANUP_DATABASE_URL"]
    database_url = urlunsplit(urlsplit(admin_url)._replace(path="/cleanup_demo"))

    console.rule("[bold]cleanup-worker demo")
    admin_db = await asyncpg.connect(admin_url)
    await admin_db.execute("DROP DATABASE IF EXISTS cleanup_demo WITH (FORCE)")
    await admin_db.execute("CREATE DATABASE cleanup_demo")
    await admin_db.close()
    kafka_admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await kafka_admin.start()
    await kafka_admin.create_topics(
        [NewTopic(topic, 3, 1), NewTopic(dlq, 1, 1), NewTopic(notices_topic, 3, 1)]
    )
    await kafka_admin.close()
    console.print(
        f"database [cyan]cleanup_demo[/], topics [cyan]{topic}[/], its DLQ, and the "
        f"revocation notices [cyan]{notices_topic}[/]"
    )

    worker_env = {
        **os.environ,
        **env,
        "CLEANUP_DATABASE_URL": database_url,
        "CLEANUP_KAFKA_TOPICS": topic,
        "CLEANUP_DLQ_TOPIC": dlq,
        "CLEANUP_REVOCATIONS_TOPIC": notices_topic,
        "CLEANUP_KAFKA_GROUP_ID": f"demo-{run}",
        "CLEANUP_HTTP_PORT": "0",
        "CLEANUP_LOG_FORMAT": "json",
    }
    cli = [sys.executable, "-m", "cleanup_worker"]
    migrate = await asyncio.create_subprocess_exec(
        *cli, "migrate", env=worker_env, stderr=asyncio.subprocess.DEVNULL
    )
    if await migrate.wait() != 0:
        console.print("[red]migrate failed")
        return 1

    now = datetime.now(UTC).replace(microsecond=0)
    db = await asyncpg.connect(database_url)
    for iam_id in ("alice", "bob", "carol"):
        await db.execute(
            "INSERT INTO account_memberships VALUES ('acme', $1, 'active', $2, $2)",
            iam_id,
            now - timedelta(days=30),
        )
    for name, iam_id, age in [
        ("alice-ci", "alice", 20), ("alice-laptop", "alice", 3),
        ("bob-deploy", "bob", 10), ("carol-reporting", "carol", 5),
    ]:  # fmt: skip
        await db.execute(
            "INSERT INTO api_keys (id, account_id, iam_id, name, key_hash, created_at) "
            "VALUES ($1, 'acme', $2, $3, $4, $5)",
            uuid.uuid4(),
            iam_id,
            name,
            f"sha256:{uuid.uuid4().hex}",
            now - timedelta(days=age),
        )
    console.print(await keys_table(db, "Keys before"))

    log_path = ROOT / ".dev" / "log" / f"demo-worker-{run}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        worker = await asyncio.create_subprocess_exec(
            *cli, "run", env=worker_env, stdout=log_file, stderr=log_file
        )
    console.print(f"started [bold]cleanup-worker run[/] (pid {worker.pid}, log {log_path})")

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    structured = [("content-type", b"application/cloudevents+json")]
    alice_removed = str(uuid.uuid4())
    later = now + timedelta(seconds=1)
    story = [
        ("alice is removed", cloudevent("account.member.removed", "alice", now, alice_removed)),
        (
            "the same removal, delivered again",
            cloudevent("account.member.removed", "alice", now, alice_removed),
        ),
        ("bob is removed", cloudevent("account.member.removed", "bob", now)),
        (
            "bob is added back",
            cloudevent("account.member.added", "bob", later),
        ),
        ("a malformed event", b'{"specversion": "1.0", "id": "broken"'),
        ("an event of another type", cloudevent("account.renamed", "carol", now)),
    ]
    for label, value in story:
        await producer.send_and_wait(topic, value=value, key=b"acme", headers=structured)
        console.print(f"  published: {label}")
    await producer.stop()

    deadline = time.monotonic() + 60
    while await db.fetchval("SELECT count(*) FROM membership_events") < 3:
        if time.monotonic() > deadline or worker.returncode is not None:
            console.print(f"[red]the worker did not apply the story; see {log_path}")
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
            return 1
        await asyncio.sleep(0.2)
    await db.execute(
        "INSERT INTO api_keys (id, account_id, iam_id, name, key_hash, created_at) "
        "VALUES ($1, 'acme', 'bob', 'bob-new', $2, now())",
        uuid.uuid4(),
        f"sha256:{uuid.uuid4().hex}",
    )
    console.print("  bob creates a new key after being added back")
    console.print(await keys_table(db, "Keys after"))
    revoked = await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL")
    console.print(await notices_table(bootstrap, notices_topic, revoked, db))

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    partition = TopicPartition(dlq, 0)
    consumer.assign([partition])
    letter = await asyncio.wait_for(consumer.getone(), timeout=30)
    await consumer.stop()
    dead = Table(title="The dead letter (provenance headers)")
    dead.add_column("header")
    dead.add_column("value")
    for name, value in letter.headers:
        if name.startswith("dlq."):
            dead.add_row(name, value.decode())
    console.print(dead)
    memberships = await db.fetch("SELECT * FROM account_memberships ORDER BY iam_id")
    await db.close()
    for row in memberships:
        since = f"{row['member_since']:%Y-%m-%d %H:%M:%S}" if row["member_since"] else "-"
        console.print(f"  membership {row['iam_id']}: {row['state']}, member since {since}")

    worker.send_signal(signal.SIGTERM)
    code = await worker.wait()
    console.print(f"worker drained and exited with code {code}")
    console.print("The services are still running: [bold]scripts/dev-services down[/] stops them.")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
