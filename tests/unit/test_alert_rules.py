"""deploy/observability/alerts.yaml: checked and unit-tested by promtool, and tied to the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.deploy_files import (
    OBSERVABILITY,
    ROOT,
    documents,
    exported_metric_names,
    metric_names_in,
    run,
    tool,
)

ALERTS = OBSERVABILITY / "alerts.yaml"
ALERT_TESTS = OBSERVABILITY / "alerts.test.yaml"
RUNBOOK = ROOT / "docs" / "operations.md"

# Valid PromQL that never returns a sample, and one that always does.
NEVER = "vector(0) > 1"
ALWAYS = "vector(1)"


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in documents(ALERTS)[0]["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alert_rules()]


def promtool_test_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = documents(ALERT_TESTS)[0]["tests"]
    return groups


def promtool(*args: str | Path) -> tuple[int, str]:
    done = run(tool("promtool"), *map(str, args))
    return done.returncode, done.stdout + done.stderr


def cases_of(alert: str, *, firing: bool) -> list[dict[str, Any]]:
    """The test groups cut down to their checks of `alert` that expect it firing (or quiet)."""
    selected = []
    for group in promtool_test_groups():
        checks = [
            check
            for check in group["alert_rule_test"]
            if check["alertname"] == alert and bool(check.get("exp_alerts")) == firing
        ]
        if checks:
            selected.append({**group, "alert_rule_test": checks})
    return selected


def run_cases_against(
    tmp_path: Path, cases: list[dict[str, Any]], alert: str, expr: str
) -> tuple[int, str]:
    """promtool test rules on `cases`, with `alert`'s expression replaced by `expr`."""
    rules = documents(ALERTS)[0]
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = expr
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    spec = {**documents(ALERT_TESTS)[0], "tests": cases}
    (tmp_path / "alerts.test.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return promtool("test", "rules", tmp_path / "alerts.test.yaml")


# --- promtool --------------------------------------------------------------------------------


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` parses every expression and template of alerts.yaml."""
    code, output = promtool("check", "rules", ALERTS)
    assert code == 0, output
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules alerts.test.yaml` passes: each alert fires and stays quiet as meant."""
    code, output = promtool("test", "rules", ALERT_TESTS)
    assert code == 0, output


@pytest.mark.parametrize("alert", alert_names())
def test_firing_cases_catch_an_alert_that_never_fires(alert: str, tmp_path: Path) -> None:
    """The alert's firing cases pass as written and fail once its expression matches nothing."""
    cases = cases_of(alert, firing=True)
    assert cases, f"alerts.test.yaml has no case where {alert} fires"
    assert run_cases_against(tmp_path, cases, "no such alert", NEVER)[0] == 0
    assert run_cases_against(tmp_path, cases, alert, NEVER)[0] != 0


@pytest.mark.parametrize("alert", alert_names())
def test_quiet_cases_catch_an_alert_that_always_fires(alert: str, tmp_path: Path) -> None:
    """The alert's quiet cases pass as written and fail once its expression always matches."""
    cases = cases_of(alert, firing=False)
    assert cases, f"alerts.test.yaml has no case where {alert} stays quiet"
    assert run_cases_against(tmp_path, cases, "no such alert", ALWAYS)[0] == 0
    assert run_cases_against(tmp_path, cases, alert, ALWAYS)[0] != 0


def test_unit_tests_name_only_existing_alerts() -> None:
    """A misspelt alertname in alerts.test.yaml would pass every quiet case vacuously."""
    named = {
        check["alertname"] for group in promtool_test_groups() for check in group["alert_rule_test"]
    }
    assert named <= set(alert_names())


# --- what promtool cannot know -----------------------------------------------------------------


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_uses_existing_metrics(rule: dict[str, Any]) -> None:
    """An alert's expression selects only metrics the worker exports, or kube_* metrics."""
    names = metric_names_in(rule["expr"])
    assert names
    unknown = {n for n in names if not n.startswith("kube_")} - exported_metric_names()
    assert not unknown


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_annotated(rule: dict[str, Any]) -> None:
    """An alert has a severity and a summary, description and runbook in docs/operations.md."""
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]
    assert rule["annotations"]["runbook_url"].startswith("docs/operations.md#")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_runbook_section_exists(rule: dict[str, Any]) -> None:
    """The runbook_url's anchor is a heading of docs/operations.md."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE)
    anchors = {re.sub(r"[^\w-]", "", heading.lower().replace(" ", "-")) for heading in headings}
    assert rule["annotations"]["runbook_url"].partition("#")[2] in anchors
