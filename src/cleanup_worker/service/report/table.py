"""The report as CSV: one row per day and rule, then the period's rows (day `all`)."""

from __future__ import annotations

import csv
import io
from typing import Any

from cleanup_worker.adapters.postgres.report import MEASURED, RULES

COLUMNS = (
    "day",
    "rule",
    "removals_applied",
    "keys_revoked",
    "measured",
    "p50_s",
    "p95_s",
    "p99_s",
    "max_s",
    "within_slo",
)


def _rows(label: str, block: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for rule in RULES:
        stats = block["exposure"].get(rule) if rule in MEASURED else None
        rows.append(
            {
                "day": label,
                "rule": rule,
                "removals_applied": block["removals_applied"],
                "keys_revoked": block["keys_revoked"][rule],
                **({k: stats[k] for k in COLUMNS[4:]} if stats else {}),
            }
        )
    every = block["exposure_all"]
    rows.append(
        {
            "day": label,
            "rule": "all measured",
            "removals_applied": block["removals_applied"],
            "keys_revoked": every["keys"],
            **{k: every[k] for k in COLUMNS[4:]},
        }
    )
    return rows


def render_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for day in report["days"]:
        writer.writerows(_rows(day["day"], day))
    writer.writerows(_rows("all", report["overall"]))
    return out.getvalue()
