"""The Dockerfile and .dockerignore: a small, non-root image of the CLI."""

from __future__ import annotations

import json

from tests.unit.deploy_files import ROOT, dockerfile_stages, final_stage


def test_dockerfile_is_multi_stage() -> None:
    """A builder stage and a python:3.11-slim final stage."""
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert stages[-1][0][1].split()[0] == "python:3.11-slim"


def test_dockerfile_final_stage_runs_as_non_root() -> None:
    """The final stage ends on a USER that is not root."""
    users = final_stage("USER")
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    """No compiler or package installation in the final stage."""
    runs = " ".join(final_stage("RUN")).lower()
    for tool in ("gcc", "build-essential", "apt-get install", "apk add", "g++"):
        assert tool not in runs


def test_dockerfile_final_stage_copies_only_the_venv() -> None:
    """The final stage takes the built venv from the builder and nothing else."""
    copies = final_stage("COPY")
    assert copies
    for copy in copies:
        assert copy.split()[-2:] == ["/opt/venv", "/opt/venv"]
        assert "--from=builder" in copy


def test_dockerfile_healthcheck_asks_livez() -> None:
    """The image's HEALTHCHECK asks /livez."""
    checks = final_stage("HEALTHCHECK")
    assert len(checks) == 1
    assert "/livez" in checks[0]


def test_dockerfile_entrypoint_is_cleanup_worker() -> None:
    """The entrypoint is the cleanup-worker CLI, running `run` by default."""
    assert json.loads(final_stage("ENTRYPOINT")[-1]) == ["cleanup-worker"]
    assert json.loads(final_stage("CMD")[-1]) == ["run"]


def test_dockerignore_keeps_secrets_out() -> None:
    """.dockerignore excludes everything by default, so .env and .dev never reach the build."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
