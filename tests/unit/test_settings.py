"""Settings: parsed once from CLEANUP_* variables; a bad one is named in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cleanup_worker.errors import ConfigurationError
from cleanup_worker.settings import load_settings

DB = "postgresql://u:pw@127.0.0.1:5432/db"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # noqa: PLC0415

    for name in list(os.environ):
        if name.startswith("CLEANUP_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir("/")  # no stray .env


def test_topics_accept_a_plain_comma_separated_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLEANUP_KAFKA_TOPICS=a, b becomes two topics."""
    monkeypatch.setenv("CLEANUP_DATABASE_URL", DB)
    monkeypatch.setenv("CLEANUP_KAFKA_TOPICS", "a, b")
    assert load_settings().kafka_topics == ["a", "b"]


def test_defaults_follow_the_design(monkeypatch: pytest.MonkeyPatch) -> None:
    """The group id defaults to api-key-cleanup and the default type names are the design's."""
    monkeypatch.setenv("CLEANUP_DATABASE_URL", DB)
    settings = load_settings()
    assert settings.kafka_group_id == "api-key-cleanup"
    assert settings.event_types.removed == frozenset({"account.member.removed"})


@pytest.mark.parametrize(
    ("env", "in_flight"),
    [
        ({}, 4),
        ({"CLEANUP_DATABASE_POOL_SIZE": "4"}, 3),
        ({"CLEANUP_DATABASE_POOL_SIZE": "40"}, 16),
        ({"CLEANUP_DATABASE_POOL_SIZE": "8", "CLEANUP_BATCHES_IN_FLIGHT": "2"}, 2),
    ],
)
def test_batches_in_flight_default_to_one_fewer_than_the_pool(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], in_flight: int
) -> None:
    """Unset, the batches in flight are the pool less the connection kept for /readyz."""
    monkeypatch.setenv("CLEANUP_DATABASE_URL", DB)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_settings().in_flight == in_flight


def test_type_names_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Producers' own type names can be listed, comma-separated."""
    monkeypatch.setenv("CLEANUP_DATABASE_URL", DB)
    monkeypatch.setenv("CLEANUP_EVENT_TYPES_REMOVED", "user.left,member.deleted")
    assert load_settings().event_types.removed == frozenset({"user.left", "member.deleted"})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "CLEANUP_DATABASE_URL"),
        ({"CLEANUP_DATABASE_URL": "mysql://x"}, "CLEANUP_DATABASE_URL"),
        ({"CLEANUP_DATABASE_URL": DB, "CLEANUP_HTTP_PORT": "70000"}, "CLEANUP_HTTP_PORT"),
        ({"CLEANUP_DATABASE_URL": DB, "CLEANUP_LOG_FORMAT": "xml"}, "CLEANUP_LOG_FORMAT"),
        ({"CLEANUP_DATABASE_URL": DB, "CLEANUP_KAFKA_TOPICS": ""}, "CLEANUP_KAFKA_TOPICS"),
        (
            {"CLEANUP_DATABASE_URL": DB, "CLEANUP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "kafka_sasl_mechanism",
        ),
        (
            {"CLEANUP_DATABASE_URL": DB, "CLEANUP_CDC_STATE_COLUMN": "state"},
            "cdc_removed_states",
        ),
        (
            {"CLEANUP_DATABASE_URL": DB, "CLEANUP_CDC_REMOVED_STATES": "removed"},
            "cdc_state_column",
        ),
        (
            {"CLEANUP_DATABASE_URL": DB, "CLEANUP_CDC_TOPICS": "account-membership"},
            "cdc_topics",
        ),
        ({"CLEANUP_DATABASE_URL": DB, "CLEANUP_CDC_TIME_COLUMN": ""}, "CLEANUP_CDC_TIME_COLUMN"),
        (
            {"CLEANUP_DATABASE_URL": DB, "CLEANUP_BATCHES_IN_FLIGHT": "5"},
            "batches_in_flight must be smaller than database_pool_size",
        ),
        (
            {"CLEANUP_DATABASE_URL": DB, "CLEANUP_DATABASE_POOL_SIZE": "1"},
            "CLEANUP_DATABASE_POOL_SIZE",
        ),
    ],
)
def test_bad_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    """A missing or invalid setting raises one ConfigurationError naming it."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError, match=named):
        load_settings()


def test_password_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error for a bad database URL does not repeat the URL (it may hold a password)."""
    monkeypatch.setenv("CLEANUP_DATABASE_URL", "mysql://user:hunter2@db/x")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "hunter2" not in str(info.value)


def test_cli_bad_setting_prints_one_line_and_exits_2() -> None:
    """`cleanup-worker run` with a bad setting: one line on stderr, no traceback, exit code 2."""
    env = {"PATH": "/usr/bin:/bin", "CLEANUP_DATABASE_URL": DB, "CLEANUP_BATCH_MAX_RECORDS": "x"}
    result = subprocess.run(
        [sys.executable, "-m", "cleanup_worker", "run"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CLEANUP_BATCH_MAX_RECORDS" in lines[0]
    assert "Traceback" not in result.stderr


def test_a_key_password_without_a_client_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CLEANUP_KAFKA_SSL_KEY_PASSWORD without a client certificate fails, naming the mistake."""
    monkeypatch.setenv("CLEANUP_DATABASE_URL", DB)
    monkeypatch.setenv("CLEANUP_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("CLEANUP_KAFKA_SSL_KEY_PASSWORD", "secret-pw")
    with pytest.raises(ConfigurationError, match="kafka_ssl_key_password needs") as raised:
        load_settings()
    assert "secret-pw" not in str(raised.value)


def test_hostname_verification_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unless switched off explicitly, the broker's certificate must name the broker."""
    monkeypatch.setenv("CLEANUP_DATABASE_URL", DB)
    assert load_settings().kafka_ssl_check_hostname is True
