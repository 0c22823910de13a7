"""Regenerates docs/report-example.html and docs/report-example.png: a report over the random
history of testkit/report_history.py (seed 21) in a scratch database, and its first
A4 page as headless chromium renders it.

    .venv/bin/python -m bench.report_example      (after `scripts/dev-services up`)
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path

import asyncpg

from cleanup_worker.bootstrap import report
from cleanup_worker.service.report.html import render_html
from cleanup_worker.settings import Settings
from testkit.report_history import DAYS, SLO_S, START, write_history
from testkit.services import scratch_database, service_env

DOCS = Path(__file__).resolve().parent.parent / "docs"


async def main() -> None:
    async with scratch_database(service_env()["CLEANUP_DATABASE_URL"], "report_example") as url:
        conn = await asyncpg.connect(url)
        try:
            await write_history(conn, random.Random(21))
        finally:
            await conn.close()
        settings = Settings(database_url=url)  # type: ignore[arg-type]
        document = await report(settings, START, START + timedelta(days=DAYS), SLO_S, assess=True)
    page = DOCS / "report-example.html"
    page.write_text(render_html(document), encoding="utf-8")
    browser = await asyncio.create_subprocess_exec(
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--window-size=794,1123", f"--screenshot={DOCS / 'report-example.png'}", page.as_uri(),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await browser.wait() != 0:
        raise SystemExit("chromium failed to render the example")


if __name__ == "__main__":
    asyncio.run(main())
