"""The README's layout lists the modules that are really there, and nothing that is not."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "cleanup_worker"


def layout() -> str:
    """The code block under the README's `## Layout` heading."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def test_every_module_is_in_the_layout() -> None:
    """A newcomer finds every module in the layout."""
    listed = layout()
    missing = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py") and path.name not in listed
    ]
    assert missing == []


def test_layout_names_no_module_that_is_gone() -> None:
    """Every module the layout names exists."""
    names = set(re.findall(r"\b([a-z_]+\.py)\b", layout()))
    present = {path.name for path in PACKAGE.rglob("*.py")} | {
        path.name
        for path in (ROOT / "tests").glob("*.py")  # oracle.py, chaos.py
    }
    assert names - present == set()
