"""`cleanup-worker doctor` through the secured services: green as the worker's principal and
least-privilege login, and a wrong password or a missing ACL named."""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from cleanup_worker.settings import Settings
from testkit.kafka import create_topic
from testkit.processes import cli
from tests.integration.secure.conftest import NOGRANT, SecureServices, over_scram


async def doctor(settings: Settings, secure: SecureServices) -> tuple[int, dict[str, Any]]:
    code, out, err = await cli(settings, "doctor", "--json")
    leaked = [secret for secret in secure.secrets() if secret in out + err]
    assert not leaked, "a secret is in doctor's output"
    return code, json.loads(out)


def outcomes(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["name"]: (c["outcome"], c["detail"]) for c in report["checks"]}


async def test_doctor_passes_as_the_worker(secure: SecureServices, settings: Settings) -> None:
    """Over SASL_SSL/SCRAM with the worker's ACLs: every check passes, WRITE is unknown."""
    code, report = await doctor(over_scram(secure, settings), secure)
    found = outcomes(report)
    assert code == 0, found
    assert found[f"consumer group {settings.kafka_group_id}"][0] == "pass"
    assert found[f"read {settings.kafka_topics[0]}"][0] == "pass"
    assert found[f"write {settings.dlq_topic}"][0] == "unknown"
    assert report["settings"]["CLEANUP_KAFKA_SASL_PASSWORD"] == "(set)"
    assert ":***@" in report["settings"]["CLEANUP_DATABASE_URL"]


async def test_doctor_names_a_wrong_kafka_password(
    secure: SecureServices, settings: Settings
) -> None:
    wrong = over_scram(secure, settings).model_copy(
        update={"kafka_sasl_password": SecretStr("not-the-password")}
    )
    code, report = await doctor(wrong, secure)
    assert code == 1
    outcome, detail = outcomes(report)["broker"]
    assert outcome == "fail"
    assert "SASL authentication failed" in detail


async def test_doctor_names_a_wrong_database_password(
    secure: SecureServices, settings: Settings
) -> None:
    secured = over_scram(secure, settings)
    url = secured.database_url.get_secret_value()
    user = url.split("//", 1)[1].split(":", 1)[0]
    wrong = secured.model_copy(
        update={"database_url": SecretStr(url.replace(f"{user}:", f"{user}:x", 1))}
    )
    code, report = await doctor(wrong, secure)
    assert code == 1
    outcome, detail = outcomes(report)["connection"]
    assert outcome == "fail"
    assert "refused the login" in detail


async def test_doctor_names_a_topic_the_worker_may_not_read(
    secure: SecureServices, settings: Settings
) -> None:
    topic = await create_topic(settings, f"{NOGRANT}doctor-{settings.kafka_group_id}")
    secured = over_scram(secure, settings).model_copy(update={"kafka_topics": [topic]})
    code, report = await doctor(secured, secure)
    assert code == 1
    outcome, detail = outcomes(report)[f"topic {topic} (input)"]
    assert outcome == "fail"
    assert "not authorised" in detail


async def test_doctor_names_a_group_the_worker_may_not_use(
    secure: SecureServices, settings: Settings
) -> None:
    secured = over_scram(secure, settings).model_copy(
        update={"kafka_group_id": f"{NOGRANT}{settings.kafka_group_id}"}
    )
    code, report = await doctor(secured, secure)
    assert code == 1
    outcome, detail = outcomes(report)[f"consumer group {secured.kafka_group_id}"]
    assert outcome == "fail"
    assert "not authorized on consumer group" in detail
