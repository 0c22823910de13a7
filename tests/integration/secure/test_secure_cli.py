"""The operator's commands (`backfill`, `replay`, `dlq list/redrive`) as the least-privilege
database login over verify-full TLS, and the operator's Kafka principal over SCRAM or mTLS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from cleanup_worker.adapters.kafka import dead_letter_topic as dlq
from cleanup_worker.adapters.kafka.clients import Record
from cleanup_worker.service.apply.failure import Failure
from cleanup_worker.settings import Settings
from testkit.database import revoked_keys, seed_key
from testkit.events import at, event, structured
from testkit.kafka import publisher
from testkit.processes import cli
from tests.integration.secure.conftest import TRANSPORTS, SecureServices


async def run_json(secured: Settings, secure: SecureServices, *args: str) -> dict[str, Any]:
    code, out, err = await cli(secured, *args, "--json")
    assert code == 0, err[-3000:]
    leaked = [secret for secret in secure.secrets() if secret in out + err]
    assert not leaked, f"a secret is in the output of {args[0]}"
    assert secured.database_url.get_secret_value() not in out + err
    document: dict[str, Any] = json.loads(out)
    return document


async def dead_letter(settings: Settings, value: bytes, headers: list[tuple[str, bytes]]) -> None:
    """A dead letter as the worker writes it: the record, plus provenance headers."""
    record = Record(settings.kafka_topics[0], 1, 7, 0, b"acct/dora", value, tuple(headers))
    failure = Failure("MalformedEvent", "larger than the configured maximum")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.dlq_topic,
            value=value,
            key=record.key,
            headers=[*headers, *dlq.provenance_headers(record, settings.kafka_group_id, failure)],
        )
    finally:
        await producer.stop()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
async def test_operator_commands_through_the_secured_services(
    transport: str, secure: SecureServices, settings: Settings, db: Any, tmp_path: Path
) -> None:
    """replay --execute, dlq list, dlq redrive --execute and backfill (dry run, then --execute
    with a CSV) all work as the operator principal and the least-privilege login."""
    secured = TRANSPORTS[transport](secure, settings, operator=True)
    erin = await seed_key(db, "acct", "erin", at(0))
    dora = await seed_key(db, "acct", "dora", at(0))
    removal = event("removed", "acct", "erin", at(10))
    async with publisher(settings) as pub:
        await pub.events([removal])
    late = event("removed", "acct", "dora", at(10))
    await dead_letter(settings, *structured(late))

    replayed = await run_json(secured, secure, "replay", "--from", "earliest", "--execute")
    assert (replayed["applied"], replayed["keys_revoked"]) == (1, 1)
    listed = await run_json(secured, secure, "dlq", "list")
    assert (listed["dead_letters"], listed["parses_now"]) == (1, 1)
    redriven = await run_json(secured, secure, "dlq", "redrive", "--execute")
    assert (redriven["redriven"], redriven["applied"]) == (1, 1)
    assert await revoked_keys(db) == {
        erin: ("member_removed", removal.ref),
        dora: ("member_removed", late.ref),
    }

    members = tmp_path / "members.csv"
    members.write_text("account_id,iam_id,member_since\nacct,frank,\n")
    frank = await seed_key(db, "acct", "frank", at(0))
    gina = await seed_key(db, "acct", "gina", at(0))
    args = ("backfill", "--memberships", str(members), "--max-fraction", "1")
    planned = await run_json(secured, secure, *args)
    assert (planned["mode"], planned["sample_key_ids"]) == ("dry_run", [str(gina)])
    assert gina not in await revoked_keys(db)
    done = await run_json(secured, secure, *args, "--execute")
    assert done["mode"] == "execute"
    revoked = await revoked_keys(db)
    assert revoked[gina][0] == "orphaned"
    assert frank not in revoked
