"""The HTML report in a real browser (Debian's chromium, headless): the first A4 page is not
blank, and the figures computed from the history are in the rendered DOM."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageStat

from cleanup_worker.settings import Settings
from testkit.processes import cli
from testkit.report_history import DAYS, START, write_history
from tests.integration.test_report import write_invariant

# A4 at 96 dpi.
A4_PX = (794, 1123)


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: `scripts/tools install` (Debian's chromium package)")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={A4_PX[0]},{A4_PX[1]}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_html_report_renders_in_a_real_browser(
    settings: Settings, db: Any, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    print(f"report history seed: {seed}")
    revocations, applied = await write_history(db, random.Random(seed))
    violations = await write_invariant(db)
    end = START + timedelta(days=DAYS)
    page = tmp_path / "report.html"
    code, _, err = await cli(
        settings, "report", "--from", START.isoformat(), "--to", end.isoformat(),
        "--format", "html", "--output", str(page),
    )  # fmt: skip
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    # Self-contained: no script, and nothing to fetch (the SVG namespace is a name, not a URL).
    assert "<script" not in html.lower()
    assert re.findall(r"(?:src|href)\s*=", html) == []
    assert "@import" not in html
    assert "url(" not in html

    shot = tmp_path / "first-page.png"
    done = chromium(f"--screenshot={shot}", page.as_uri())
    assert shot.exists(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == A4_PX
        grey = image.convert("L")
        stats = ImageStat.Stat(grey)
        dark = sum(grey.histogram()[:200])
    assert stats.stddev[0] > 20, "the first page is (nearly) one colour"
    assert dark > 0.02 * A4_PX[0] * A4_PX[1], "the first page has almost no ink"

    dom = chromium("--dump-dom", page.as_uri()).stdout
    removals = sum(START <= a < end for a in applied)
    r1 = sum(r.rule == "R1" and START <= r.revoked_at < end for r in revocations)
    assert f'<b id="removals">{removals}</b>' in dom
    assert f'<span id="invariant-count">{violations}</span>' in dom
    assert f"<td>R1</td><td>{r1}</td>" in dom
    assert dom.count("<tr>") >= DAYS + 5
