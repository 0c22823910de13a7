"""overlays/secure-example, rendered by kustomize: TLS files and passwords come from Secrets,
mounted read-only where the settings say they are."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.unit.deploy_files import K8S
from tests.unit.test_kubernetes import find, kustomize_build


@pytest.fixture(scope="module")
def secure() -> list[dict[str, Any]]:
    return kustomize_build(K8S / "overlays" / "secure-example")


def mounted_secrets(pod: dict[str, Any]) -> dict[str, str]:
    """Mount path -> Secret name, for the pod's one container (every mount read-only)."""
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    [container] = pod["containers"]
    mounts = [m for m in container["volumeMounts"] if m["name"] in secrets]
    assert all(m.get("readOnly") for m in mounts)
    return {m["mountPath"]: secrets[m["name"]] for m in mounts}


def pod(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, kind, name)["spec"]["template"]["spec"]
    return spec


def test_kafka_files_are_in_the_mounted_kafka_secret(secure: list[dict[str, Any]]) -> None:
    """Every CLEANUP_KAFKA_SSL_* path lies in the worker's mount of the Kafka TLS Secret, and
    the SCRAM settings of the example are gone."""
    config = find(secure, "ConfigMap", "cleanup-worker")["data"]
    mounts = mounted_secrets(pod(secure, "Deployment", "cleanup-worker"))
    files = [v for k, v in config.items() if k.startswith("CLEANUP_KAFKA_SSL_")]
    assert len(files) == 3
    assert {mounts[str(PurePosixPath(path).parent)] for path in files} == {
        "cleanup-worker-kafka-tls"
    }
    assert config["CLEANUP_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert "CLEANUP_KAFKA_SASL_MECHANISM" not in config


def test_key_password_comes_from_the_secret(secure: list[dict[str, Any]]) -> None:
    """CLEANUP_KAFKA_SSL_KEY_PASSWORD is a secretKeyRef, never a ConfigMap value."""
    [container] = pod(secure, "Deployment", "cleanup-worker")["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["CLEANUP_KAFKA_SSL_KEY_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"]
    config = find(secure, "ConfigMap", "cleanup-worker")["data"]
    assert not [key for key in config if "PASSWORD" in key]


def test_every_program_gets_the_database_ca(secure: list[dict[str, Any]]) -> None:
    """The worker, the backfill and migrate all mount the database CA at the same path."""
    for kind, name in [
        ("Deployment", "cleanup-worker"),
        ("Job", "cleanup-worker-backfill"),
        ("Job", "cleanup-worker-migrate"),
    ]:
        assert mounted_secrets(pod(secure, kind, name))["/etc/cleanup-worker/db"] == (
            "cleanup-worker-db-tls"
        )
