"""What `doctor` shows of the settings: every value, never a secret."""

from __future__ import annotations

from pydantic import SecretStr

from cleanup_worker.service.doctor.settings_view import shown, without_password
from cleanup_worker.settings import Settings


def test_dsn_loses_only_its_password() -> None:
    assert (
        without_password("postgresql://app:s3cret@db.example:5432/app?sslmode=verify-full")
        == "postgresql://app:***@db.example:5432/app?sslmode=verify-full"
    )
    assert without_password("postgresql://app@db/app") == "postgresql://app@db/app"


def test_secrets_are_only_said_to_be_set() -> None:
    settings = Settings(
        database_url=SecretStr("postgresql://app:s3cret@db/app"),
        kafka_bootstrap_servers="kafka:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cleanup-worker",
        kafka_sasl_password=SecretStr("hunter2"),
        kafka_topics=["a", "b"],
    )
    view = shown(settings)
    assert "s3cret" not in repr(view)
    assert "hunter2" not in repr(view)
    assert view["CLEANUP_KAFKA_SASL_PASSWORD"] == "(set)"
    assert view["CLEANUP_KAFKA_SSL_KEY_PASSWORD"] is None
    assert view["CLEANUP_KAFKA_TOPICS"] == "a,b"
    assert set(view) == {f"CLEANUP_{name.upper()}" for name in Settings.model_fields}
