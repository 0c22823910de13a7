"""docker-compose.yml: the same stack from the official images, for people with Docker."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from tests.unit.deploy_files import K8S, ROOT, documents

COMPOSE = ROOT / "docker-compose.yml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose()["services"][name]
    return service


def as_args(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_worker_command_is_run() -> None:
    """The compose worker runs `cleanup-worker run`."""
    assert as_args(compose_service("worker")["command"]) == ["run"]


def test_compose_worker_has_two_replicas() -> None:
    """The compose stack starts two workers in one consumer group."""
    assert compose_service("worker")["deploy"]["replicas"] == 2


def test_compose_worker_waits_for_migrate() -> None:
    """The workers start only after the migrations completed successfully."""
    depends = compose_service("worker")["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_compose_dependencies_all_have_conditions() -> None:
    """Every depends_on entry waits for a health or completion condition."""
    for name, service in compose()["services"].items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), name
        for target, rule in depends.items():
            assert rule["condition"] in {
                "service_healthy",
                "service_completed_successfully",
            }, f"{name} -> {target}"


def test_compose_long_running_services_have_healthchecks() -> None:
    """Every service that keeps running has a healthcheck."""
    for name, service in compose()["services"].items():
        if service.get("restart", "no") != "no":
            assert service["healthcheck"]["test"], name


def test_compose_backfill_is_an_opt_in_dry_run() -> None:
    """The backfill service only starts under its profile, and without --execute."""
    backfill = compose_service("backfill")
    assert backfill["profiles"] == ["backfill"]
    assert "--execute" not in as_args(backfill["command"])


def test_compose_needs_no_variables() -> None:
    """docker-compose.yml has no ${VAR} placeholders to fill in."""
    text = COMPOSE.read_text(encoding="utf-8").replace("$$", "")
    assert "$" not in text


def test_keda_scales_to_the_partition_count() -> None:
    """KEDA scales between 2 and the 6 partitions that compose creates for the topic."""
    scaled = documents(K8S / "optional" / "keda" / "scaledobject.yaml")[0]
    init = " ".join(as_args(compose_service("kafka-init")["command"]))
    partitions = re.search(r"--topic account-membership --partitions (\d+)", init)
    assert partitions
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (
        2,
        int(partitions.group(1)),
    )
