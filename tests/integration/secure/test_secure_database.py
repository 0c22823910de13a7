"""The worker's database login of `up --secure`: only the cleanup_worker role, over verified TLS
only, and a refused login is one line."""

from __future__ import annotations

import ssl
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from cleanup_worker.settings import Settings
from testkit.processes import cli
from tests.integration.secure.conftest import SECURE, SecureServices, secured_database_url


async def test_the_login_holds_only_the_worker_role_over_tls(
    secure: SecureServices, database_url: str, db: Any
) -> None:
    """Over verify-full the login is no superuser, a member of cleanup_worker alone, and
    cannot create keys."""
    conn = await asyncpg.connect(secured_database_url(secure, database_url))
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication "
            "FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None
        assert not any(role.values())
        member_of = await conn.fetchval(
            "SELECT array_agg(r.rolname) FROM pg_auth_members m "
            "JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member "
            "WHERE u.rolname = current_user"
        )
        assert member_of == ["cleanup_worker"]
        assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO api_keys (id, account_id, iam_id, key_hash) "
                "VALUES (gen_random_uuid(), 'a', 'u', 'h')"
            )
    finally:
        await conn.close()


async def test_the_login_is_refused_without_tls(secure: SecureServices, database_url: str) -> None:
    """pg_hba.conf admits the login over hostssl only."""
    plain = secured_database_url(secure, database_url).replace(
        "sslmode=verify-full", "sslmode=disable"
    )
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(plain)


async def test_a_server_certificate_from_another_ca_is_refused(
    secure: SecureServices, database_url: str
) -> None:
    """verify-full with a root certificate that did not sign the server's: no connection."""
    url = secured_database_url(secure, database_url).replace(
        str(SECURE / "ca.pem"), str(SECURE / "rogue-ca.pem")
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(url)


async def test_a_wrong_password_is_one_line_without_the_dsn(
    secure: SecureServices, settings: Settings
) -> None:
    """A command whose login is refused says so in one line and exits 1; no DSN, no password."""
    url = secured_database_url(secure, settings.database_url.get_secret_value())
    password = url.split(":", 2)[2].split("@", 1)[0]
    wrong = settings.model_copy(
        update={"database_url": SecretStr(url.replace(f":{password}@", ":not-the-password@"))}
    )
    code, out, err = await cli(wrong, "backfill", "--json")
    assert code == 1
    [line] = err.strip().splitlines()
    assert "refused the login" in line
    assert "InvalidPasswordError" in line
    assert "not-the-password" not in out + err
    assert password not in out + err
