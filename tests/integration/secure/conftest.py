"""Fixtures for the secured services of `scripts/dev-services up --secure` (docs/design.md, "Real
services in tests").

The broker and PostgreSQL are the same ones the plain tests use (`.dev/env`); the test arranges
and inspects through them in plain text, and runs the programs through the secured listeners
and the least-privilege database login of `.dev/secure.env` / `.dev/secure-mtls.env`.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from cleanup_worker.settings import Settings
from testkit.services import HOW_TO, ROOT, Services, dev_env

SECURE = ROOT / ".dev" / "secure"
# The test topics and groups are named with these prefixes (tests/conftest.py); the worker
# and operator principals get the same rights on them as `up --secure` grants on the real
# names. A topic outside the prefixes (see NOGRANT) has no ACL at all.
EVENTS_PREFIX, DLQ_PREFIX, GROUP_PREFIX = "test-events-", "test-dlq-", "test-group-"
NOGRANT = "nogrant-"
WORKER, OPERATOR = "User:cleanup-worker", "User:cleanup-operator"


@dataclass(frozen=True)
class SecureServices:
    plain: dict[str, str]
    sasl: dict[str, str]
    mtls: dict[str, str]

    @property
    def plain_bootstrap(self) -> str:
        return self.plain["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]

    def secrets(self) -> list[str]:
        """Every password and the private keys: none may appear in a log."""
        found = [
            value
            for env in (self.sasl, self.mtls)
            for name, value in env.items()
            if name.endswith("PASSWORD")
        ]
        found.append(urlsplit(self.sasl["CLEANUP_DATABASE_URL"]).password or "missing")
        for key in ("worker.key", "worker-encrypted.key", "operator.key"):
            lines = (SECURE / key).read_text().splitlines()
            found.extend(line for line in lines[1:-1] if len(line) > 40)
        return found


def run_up_secure() -> None:
    with tempfile.TemporaryFile(mode="w+") as output:
        result = subprocess.run(
            [str(ROOT / "scripts" / "dev-services"), "up", "--secure"],
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=600,
        )
        output.seek(0)
        printed = output.read()
    if result.returncode != 0:
        tail = "\n".join(printed.splitlines()[-15:])
        pytest.fail(f"`scripts/dev-services up --secure` failed:\n{tail}", pytrace=False)


def kafka_acls(bootstrap: str, *args: str) -> None:
    """Kafka's own kafka-acls tool, through the PLAINTEXT listener (a super user, dev only)."""
    result = subprocess.run(
        [str(ROOT / "scripts" / "kafka"), "acls", "--bootstrap-server", bootstrap, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


async def kafka_acls_async(bootstrap: str, *args: str) -> None:
    await asyncio.to_thread(kafka_acls, bootstrap, *args)


@pytest.fixture(scope="session")
def secure(services: Services) -> SecureServices:
    """The secured listeners and login of this checkout's dev services, ACLs for the tests."""
    run_up_secure()
    plain = dev_env()
    if (plain["CLEANUP_DATABASE_URL"], plain["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"]) != (
        services.database_url,
        services.kafka_bootstrap_servers,
    ):
        pytest.fail(
            f"{HOW_TO}\nthe secure tests need this checkout's dev services: point "
            "CLEANUP_DATABASE_URL and CLEANUP_KAFKA_BOOTSTRAP_SERVERS at .dev/env (or unset them)",
            pytrace=False,
        )
    found = SecureServices(
        plain,
        dev_env(ROOT / ".dev" / "secure.env"),
        dev_env(ROOT / ".dev" / "secure-mtls.env"),
    )
    boot = found.plain_bootstrap
    prefixed = ("--resource-pattern-type", "prefixed")
    kafka_acls(boot, "--add", "--allow-principal", WORKER, "--operation", "Read",
               "--topic", EVENTS_PREFIX, "--group", GROUP_PREFIX, *prefixed)  # fmt: skip
    kafka_acls(boot, "--add", "--allow-principal", WORKER, "--operation", "Write",
               "--operation", "Describe", "--topic", DLQ_PREFIX, *prefixed)  # fmt: skip
    kafka_acls(boot, "--add", "--allow-principal", OPERATOR, "--operation", "Read",
               "--topic", EVENTS_PREFIX, "--topic", DLQ_PREFIX, *prefixed)  # fmt: skip
    return found


def secured_database_url(secure: SecureServices, plain_url: str) -> str:
    """The test's own database, reached as the least-privilege login over verify-full TLS."""
    login = urlsplit(secure.sasl["CLEANUP_DATABASE_URL"])
    return urlunsplit(login._replace(path=urlsplit(plain_url).path))


def _files(env: dict[str, str]) -> dict[str, object]:
    return {
        "kafka_ssl_cafile": Path(env["CLEANUP_KAFKA_SSL_CAFILE"]),
        "kafka_ssl_check_hostname": True,
    }


def over_scram(secure: SecureServices, settings: Settings, *, operator: bool = False) -> Settings:
    """`settings`, but over SASL_SSL/SCRAM-SHA-512 as the worker (or the operator)."""
    env = secure.sasl
    user, password = (
        (env["CLEANUP_DEV_OPERATOR_SASL_USERNAME"], env["CLEANUP_DEV_OPERATOR_SASL_PASSWORD"])
        if operator
        else (env["CLEANUP_KAFKA_SASL_USERNAME"], env["CLEANUP_KAFKA_SASL_PASSWORD"])
    )
    return settings.model_copy(
        update={
            "database_url": SecretStr(
                secured_database_url(secure, settings.database_url.get_secret_value())
            ),
            "kafka_bootstrap_servers": env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"],
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": user,
            "kafka_sasl_password": SecretStr(password),
            **_files(env),
        }
    )


def over_mtls(secure: SecureServices, settings: Settings, *, operator: bool = False) -> Settings:
    """`settings`, but over mutual TLS with the worker's (or the operator's) certificate."""
    env = secure.mtls
    if operator:
        cert = env["CLEANUP_DEV_OPERATOR_SSL_CERTFILE"]
        key = env["CLEANUP_DEV_OPERATOR_SSL_KEYFILE"]
        password = None
    else:
        cert, key = env["CLEANUP_KAFKA_SSL_CERTFILE"], env["CLEANUP_KAFKA_SSL_KEYFILE"]
        password = SecretStr(env["CLEANUP_KAFKA_SSL_KEY_PASSWORD"])
    return settings.model_copy(
        update={
            "database_url": SecretStr(
                secured_database_url(secure, settings.database_url.get_secret_value())
            ),
            "kafka_bootstrap_servers": env["CLEANUP_KAFKA_BOOTSTRAP_SERVERS"],
            "kafka_security_protocol": "SSL",
            "kafka_ssl_certfile": Path(cert),
            "kafka_ssl_keyfile": Path(key),
            "kafka_ssl_key_password": password,
            **_files(env),
        }
    )


TRANSPORTS = {"scram": over_scram, "mtls": over_mtls}
