"""What the deploy-file tests share: paths, YAML loading, the real tools, PromQL names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cleanup_worker.observability.metrics import REGISTRY

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OBSERVABILITY = DEPLOY / "observability"
TOOLS_BIN = ROOT / ".dev" / "tools" / "bin"
HOW_TO_GET_TOOLS = (
    "run `scripts/tools install` (or `make tools`): it builds the pinned kustomize with Go and "
    "takes promtool from Debian's prometheus package, into .dev/tools/bin"
)


def documents(path: Path) -> list[Any]:
    """Every non-empty YAML document in a file."""
    text = path.read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def tool(name: str, *, pinned: bool = False) -> str:
    """The path of a command-line tool: .dev/tools/bin first, then PATH unless `pinned`."""
    local = TOOLS_BIN / name
    if local.is_file():
        return str(local)
    found = None if pinned else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is missing: {HOW_TO_GET_TOOLS}")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a tool; the caller asserts on its exit code and shows its output."""
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)


def exported_metric_names() -> set[str]:
    """Every series name /metrics can expose, whether or not a labelled child exists yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "by", "without"}


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana query) selects."""
    # promtool parses the rules, but cannot know which metrics the worker exports.
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers (Grafana variables too)
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, "", text)
    # Identifiers not followed by "(" (those are functions and aggregations).
    tokens = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {token for token in tokens if token.lower() not in PROMQL_WORDS}


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def final_stage(keyword: str) -> list[str]:
    """The arguments of every `keyword` instruction in the Dockerfile's final stage."""
    return [rest for key, rest in dockerfile_stages()[-1] if key == keyword]
