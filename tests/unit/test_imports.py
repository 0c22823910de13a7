"""tests/ and bench/ share through testkit/ and never import each other; testkit/ imports
neither (every import statement read with `ast`, including those inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from testkit.services import ROOT

# Each top-level package of the repository, and the packages of it that it may not import.
FORBIDDEN = {
    "tests": {"bench"},
    "bench": {"tests"},
    "testkit": {"tests", "bench"},
}


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in a file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def cross_imports(package: str) -> list[str]:
    """Every import in `package` of a package it may not import, as "file:line: module"."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported(path):
            if module.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_cross_imports(package: str) -> None:
    """No module of tests/, bench/ or testkit/ imports a package it must not."""
    assert cross_imports(package) == []


def test_the_check_sees_a_cross_import(tmp_path: Path) -> None:
    """The reader finds both forms of import, at any depth of the file."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import bench.consumer\n"
        "def f() -> None:\n"
        "    from tests.support import waiting\n"
        "from .sibling import x\n"
    )
    assert imported(sample) == [(1, "bench.consumer"), (3, "tests.support")]
