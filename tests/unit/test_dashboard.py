"""deploy/observability/grafana-dashboard.json: a Grafana dashboard over metrics that exist."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.deploy_files import OBSERVABILITY, exported_metric_names, metric_names_in

DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def test_dashboard_is_a_grafana_dashboard() -> None:
    """The dashboard JSON parses, has schemaVersion 39 and has panels with queries."""
    board = dashboard()
    assert board["schemaVersion"] == 39
    assert dashboard_exprs()


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_dashboard_query_uses_existing_metrics(expr: str) -> None:
    """A dashboard query selects only metrics the worker exports."""
    names = metric_names_in(expr)
    assert names
    assert names <= exported_metric_names()


def test_dashboard_panel_ids_are_unique() -> None:
    """Grafana needs distinct panel ids."""
    ids = [panel["id"] for panel in panels(dashboard())]
    assert len(ids) == len(set(ids))


def test_metric_name_extraction_ignores_functions_and_labels() -> None:
    """The PromQL scanner keeps metric names, not functions, labels, ranges or keywords."""
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y"}[5m]))) > 1 '
        "and on() absent(b) or sum(c) without (d)"
    )
    assert metric_names_in(expr) == {"a_bucket", "b", "c"}
