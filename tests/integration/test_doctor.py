"""`cleanup-worker doctor` as a real process against the dev services: all green on a healthy
estate, and each broken thing named, with what to do, when one is broken."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from cleanup_worker.errors import EXIT_FAILED
from cleanup_worker.settings import Settings
from testkit.operator import operator_login
from testkit.processes import cli


async def doctor(settings: Settings, **extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await cli(settings, "doctor", "--json", **extra)
    assert code in (0, EXIT_FAILED), err[-2000:]
    return code, json.loads(out)


def failures(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"] if c["outcome"] == "fail"}


async def test_doctor_passes_on_the_dev_services(settings: Settings) -> None:
    code, report = await doctor(settings)
    assert failures(report) == {}
    assert code == 0
    assert report["healthy"] is True
    names = {c["name"] for c in report["checks"]}
    for expected in (
        "table api_keys",
        "index api_keys_live_by_member",
        "trigger api_keys_revocation_is_permanent (R4)",
        "migrations",
        "database clock",
        "broker",
        f"topic {settings.kafka_topics[0]} (input)",
        f"topic {settings.dlq_topic} (dead letters)",
        f"read {settings.kafka_topics[0]}",
        f"consumer group {settings.kafka_group_id}",
    ):
        assert expected in names
    topic = next(c for c in report["checks"] if c["name"].startswith("topic test-events"))
    assert topic["detail"] == "3 partition(s)"
    assert report["settings"]["CLEANUP_KAFKA_GROUP_ID"] == settings.kafka_group_id


async def test_doctor_names_a_dropped_index(settings: Settings, db: Any) -> None:
    await db.execute("DROP INDEX api_keys_by_revoked_at")
    code, report = await doctor(settings)
    assert code == EXIT_FAILED
    [row] = failures(report).values()
    assert row["name"] == "index api_keys_by_revoked_at"
    assert row["detail"].startswith("missing")
    assert "migrate" in row["fix"]


async def test_doctor_names_an_invalid_index(settings: Settings, db: Any) -> None:
    """A failed CREATE INDEX CONCURRENTLY leaves an invalid index of the right name."""
    await db.execute("DROP INDEX api_keys_by_member")
    await db.execute(
        "INSERT INTO api_keys (id, account_id, iam_id, key_hash) VALUES "
        "(gen_random_uuid(), 'a', 'u', 'h'), (gen_random_uuid(), 'a', 'u', 'h')"
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY api_keys_by_member ON api_keys (account_id, iam_id)"
        )
    code, report = await doctor(settings)
    row = failures(report)["index api_keys_by_member"]
    assert code == EXIT_FAILED
    assert row["detail"].startswith("invalid")


async def test_doctor_names_a_disabled_trigger(settings: Settings, db: Any) -> None:
    await db.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_revocation_is_permanent")
    code, report = await doctor(settings)
    assert code == EXIT_FAILED
    [row] = failures(report).values()
    assert row["name"] == "trigger api_keys_revocation_is_permanent (R4)"
    assert row["detail"].startswith("disabled")
    assert "ENABLE ALWAYS TRIGGER" in row["fix"]


async def test_doctor_names_a_missing_grant(settings: Settings, db: Any, database_url: str) -> None:
    """As a login in cleanup_worker, after INSERT on the outbox was revoked from the role."""
    await db.execute("REVOKE INSERT ON revocation_outbox FROM cleanup_worker")
    async with operator_login(database_url, "cleanup_worker") as login:
        code, report = await doctor(settings, CLEANUP_DATABASE_URL=login)
    assert code == EXIT_FAILED
    [row] = failures(report).values()
    assert row["name"].startswith("grants of login op_")
    assert row["detail"] == "lacks INSERT on revocation_outbox"
    assert "GRANT cleanup_worker TO" in row["fix"]


async def test_doctor_names_a_missing_topic(settings: Settings) -> None:
    settings = settings.model_copy(update={"kafka_topics": ["test-events-never-created"]})
    code, report = await doctor(settings)
    assert code == EXIT_FAILED
    [row] = failures(report).values()
    assert row["name"] == "topic test-events-never-created (input)"
    assert row["detail"] == "missing"


async def test_doctor_names_a_missing_migration(settings: Settings, db: Any) -> None:
    await db.execute("DELETE FROM schema_migrations WHERE version = 10")
    code, report = await doctor(settings)
    assert code == EXIT_FAILED
    assert failures(report)["migrations"]["detail"] == "not applied: 0010"


async def test_doctor_as_a_table_says_what_to_do(settings: Settings, db: Any) -> None:
    await db.execute("ALTER TABLE api_keys DISABLE TRIGGER api_keys_revocation_is_permanent")
    code, out, _ = await cli(settings, "doctor")
    assert code == EXIT_FAILED
    assert "✘ database trigger api_keys_revocation_is_permanent (R4): disabled" in out
    assert "    → ALTER TABLE api_keys ENABLE ALWAYS TRIGGER" in out
    assert "✔ kafka    broker:" in out
    assert out.rstrip().endswith("1 check(s) failed")
