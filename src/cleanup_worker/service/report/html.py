"""The report as one self-contained HTML file: inline CSS and SVG, nothing fetched, no script;
laid out for A4 paper (an auditor prints it or saves it as PDF)."""

from __future__ import annotations

from html import escape
from typing import Any

from cleanup_worker.adapters.postgres.report import MEASURED, RULES

_CSS = """
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; font-size: 10pt;
       color: #111; margin: 0 auto; max-width: 186mm; }
h1 { font-size: 16pt; margin: 0 0 2mm; } h2 { font-size: 12pt; margin: 6mm 0 2mm; }
p.meta { color: #444; margin: 0 0 3mm; }
table { border-collapse: collapse; width: 100%; margin-bottom: 3mm; }
th, td { border: 0.3mm solid #bbb; padding: 1mm 1.5mm; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eef; } tr { break-inside: avoid; }
.ok { background: #e6f4e6; border: 0.5mm solid #2a7; padding: 2mm; }
.bad { background: #fde8e8; border: 0.5mm solid #c22; padding: 2mm; font-weight: bold; }
svg { width: 100%; height: auto; } .small { font-size: 8pt; color: #444; }
"""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def _stats_row(label: str, stats: dict[str, Any]) -> str:
    cells = [
        escape(label),
        str(stats["measured"]),
        duration(stats["p50_s"]),
        duration(stats["p95_s"]),
        duration(stats["p99_s"]),
        duration(stats["max_s"]),
        _share(stats["within_slo"]),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_STATS_HEAD = (
    "<tr><th>rule</th><th>keys</th><th>p50</th><th>p95</th><th>p99</th><th>max</th>"
    "<th>within SLO</th></tr>"
)


def _chart(days: list[dict[str, Any]], slo_s: float) -> str:
    """Daily revocations (bars) and each day's p99 exposure against the SLO (dots, line)."""
    width, height, left, bottom = 700, 220, 50, 30
    plot_w, plot_h = width - left - 10, height - bottom - 20
    counts = [sum(d["keys_revoked"][r] for r in MEASURED) for d in days]
    p99s = [d["exposure_all"]["p99_s"] for d in days]
    top_count = max(counts, default=0) or 1
    top_p99 = max([p for p in p99s if p is not None] + [slo_s]) * 1.1
    step = plot_w / max(len(days), 1)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img" '
        'aria-label="daily revocations and p99 exposure">',
        f'<rect x="{left}" y="10" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#ccc"/>',
    ]
    for n, (count, p99) in enumerate(zip(counts, p99s, strict=True)):
        bar = plot_h * count / top_count
        x = left + n * step
        parts.append(
            f'<rect x="{x + step * 0.15:.1f}" y="{10 + plot_h - bar:.1f}" '
            f'width="{step * 0.7:.1f}" height="{bar:.1f}" fill="#9bc"/>'
        )
        if p99 is not None:
            y = 10 + plot_h - plot_h * p99 / top_p99
            parts.append(f'<circle cx="{x + step / 2:.1f}" cy="{y:.1f}" r="2.5" fill="#c22"/>')
    slo_y = 10 + plot_h - plot_h * slo_s / top_p99
    parts += [
        f'<line x1="{left}" x2="{left + plot_w}" y1="{slo_y:.1f}" y2="{slo_y:.1f}" '
        'stroke="#c22" stroke-dasharray="4 3"/>',
        f'<text x="{left + plot_w - 4}" y="{slo_y - 3:.1f}" font-size="10" text-anchor="end" '
        f'fill="#c22">SLO {escape(duration(slo_s))}</text>',
        f'<text x="4" y="20" font-size="10">{top_count}</text>',
        f'<text x="{left + plot_w - 4}" y="22" font-size="10" text-anchor="end" fill="#c22">'
        f"p99 axis: {escape(duration(top_p99))}</text>",
        f'<text x="4" y="{10 + plot_h}" font-size="10">0</text>',
    ]
    if days:
        parts.append(
            f'<text x="{left}" y="{height - 8}" font-size="10">{escape(days[0]["day"])}</text>'
        )
        parts.append(
            f'<text x="{left + plot_w}" y="{height - 8}" font-size="10" text-anchor="end">'
            f"{escape(days[-1]['day'])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _invariant(found: dict[str, Any] | None) -> str:
    if found is None:
        return '<p class="small">Not assessed in this run (--no-invariant).</p>'
    live = found["live_keys_of_removed_members"]
    css = "ok" if live == 0 else "bad"
    return (
        f'<p class="{css}" id="invariant">Live keys whose owner is removed: '
        f'<span id="invariant-count">{live}</span> (must be 0), of {found["keys_scanned"]} keys, '
        f"assessed {escape(found['assessed_at'])}.</p>"
        f'<p class="small">Also orphaned by R5: {found["live_keys_before_member_since"]} live '
        f"keys created before their owner's current membership, and "
        f"{found['live_keys_without_membership']} whose owner has no membership the worker "
        "knows of (keys that predate the worker: `cleanup-worker backfill`).</p>"
    )


def render_html(report: dict[str, Any]) -> str:
    overall, slo = report["overall"], report["slo_s"]
    period = report["period"]
    rows = [_stats_row(rule, overall["exposure"][rule]) for rule in MEASURED]
    rows.append(_stats_row("all three", overall["exposure_all"]))
    revoked = "".join(
        f"<tr><td>{escape(rule)}</td><td>{overall['keys_revoked'][rule]}</td></tr>"
        for rule in RULES
    )
    daily = "".join(
        f"<tr><td>{escape(d['day'])}</td><td>{d['removals_applied']}</td>"
        + "".join(f"<td>{d['keys_revoked'][r]}</td>" for r in RULES)
        + f"<td>{duration(d['exposure_all']['p99_s'])}</td>"
        f"<td>{_share(d['exposure_all']['within_slo'])}</td></tr>"
        for d in report["days"]
    )
    slowest = "".join(
        f"<tr><td>{escape(s['key_id'][:8])}… {escape(s['member'])}</td><td>{escape(s['rule'])}"
        f"</td><td>{duration(s['exposure_s'])}</td><td>{duration(s['producer_delay_s'])}</td>"
        f"<td>{duration(s['worker_delay_s'])}</td></tr>"
        for s in report["slowest"]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Revocation report {escape(period["from"])} to {escape(period["to"])}</title>
<style>{_CSS}</style></head><body>
<h1>API key revocation report</h1>
<p class="meta">Period {escape(period["from"])} to {escape(period["to"])} (end excluded) ·
SLO <span id="slo">{escape(duration(slo))}</span> · generated {escape(report["generated_at"])}
by cleanup-worker</p>
{_invariant(report["invariant"])}
<h2>Overall</h2>
<p>Removals applied: <b id="removals">{overall["removals_applied"]}</b>. Exposure is the time
a removed member's key stayed usable: from the removal's event time to the revocation (R1),
from the removal's application to the revocation of a key committed after it (R1 re-check,
an upper bound), from the key's creation to its revocation (R6).</p>
<table id="exposure">{_STATS_HEAD}{"".join(rows)}</table>
<table id="revoked"><tr><th>keys revoked by</th><th>keys</th></tr>{revoked}</table>
<p class="small">R5: revoked by a backfill run (keys that were orphaned before it ran; no
event to measure from). other: revoked by something other than the worker's rules.</p>
<h2>By day</h2>
{_chart(report["days"], slo)}
<p class="small">Bars: keys revoked by R1, its re-check and R6 per day (UTC). Dots: that day's
p99 exposure; dashed: the SLO.</p>
<table id="days"><tr><th>day (UTC)</th><th>removals</th>
{"".join(f"<th>{escape(r)}</th>" for r in RULES)}<th>p99</th><th>within SLO</th></tr>
{daily}</table>
<h2>Slowest revocations</h2>
<table id="slowest"><tr><th>key, member</th><th>rule</th><th>exposure</th>
<th>producer (event → Kafka)</th><th>worker (Kafka → applied)</th></tr>{slowest}</table>
</body></html>
"""
