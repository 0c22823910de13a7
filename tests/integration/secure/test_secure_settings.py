"""The TLS context built from the settings, with the certificates of `up --secure`."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr

from cleanup_worker.adapters.kafka.clients import ssl_context
from cleanup_worker.errors import ConfigurationError
from cleanup_worker.settings import Settings
from testkit.processes import cli
from tests.integration.secure.conftest import SecureServices, over_mtls


def test_the_broker_certificate_and_its_name_are_verified(
    secure: SecureServices, settings: Settings
) -> None:
    """By default the context requires a certificate from the CA and checks the host name."""
    context = ssl_context(over_mtls(secure, settings))
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_hostname_check_is_off_only_when_asked(secure: SecureServices, settings: Settings) -> None:
    """CLEANUP_KAFKA_SSL_CHECK_HOSTNAME=false turns off the name check, not the chain check."""
    unchecked = over_mtls(secure, settings).model_copy(update={"kafka_ssl_check_hostname": False})
    context = ssl_context(unchecked)
    assert context is not None
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, False)


def test_an_encrypted_key_without_its_password_is_named(
    secure: SecureServices, settings: Settings
) -> None:
    """No password for the encrypted key: a configuration error naming the setting (OpenSSL
    never prompts)."""
    missing = over_mtls(secure, settings).model_copy(update={"kafka_ssl_key_password": None})
    with pytest.raises(ConfigurationError, match="CLEANUP_KAFKA_SSL_KEY_PASSWORD"):
        ssl_context(missing)


def test_a_wrong_key_password_is_named_and_not_echoed(
    secure: SecureServices, settings: Settings
) -> None:
    """A wrong password: a configuration error that names the setting and not the value."""
    wrong = over_mtls(secure, settings).model_copy(
        update={"kafka_ssl_key_password": SecretStr("not-the-key-password")}
    )
    with pytest.raises(ConfigurationError, match="CLEANUP_KAFKA_SSL_KEY_PASSWORD") as raised:
        ssl_context(wrong)
    assert "not-the-key-password" not in str(raised.value)


async def test_run_without_the_key_password_exits_2_in_one_line(
    secure: SecureServices, settings: Settings
) -> None:
    """`cleanup-worker run` with an encrypted key and no password stops at once, exit 2."""
    missing = over_mtls(secure, settings).model_copy(update={"kafka_ssl_key_password": None})
    code, _, err = await cli(missing, "run")
    assert code == 2, err[-2000:]
    assert [line for line in err.splitlines() if "CLEANUP_KAFKA_SSL_KEY_PASSWORD" in line]
    assert "Traceback" not in err
