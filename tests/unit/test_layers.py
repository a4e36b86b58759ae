"""The library's tree is layered: no import runs upward (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import faultbook

PKG = Path(faultbook.__file__).parent
ORDER = [
    "plumbing",
    "lab",
    "stack",
    "backup",
    "drills",
    "security",
    "archive",
    "report",
    "triage",
    "alerts",
    "suites",
    "oncall",
    "cli",
]
MAX_LINES = 600


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ORDER else "plumbing"


def modules() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def imported(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("faultbook"):
            out.append(node.module)
            if node.module in {"faultbook", *(f"faultbook.{p}" for p in ORDER)}:
                out += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("faultbook")]
    return out


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_no_import_runs_upward(path: Path) -> None:
    name = ".".join(("faultbook", *path.relative_to(PKG).with_suffix("").parts))
    me = ORDER.index(layer(name.removesuffix(".__init__")))
    upward = [m for m in imported(path) if m != "faultbook" and ORDER.index(layer(m)) > me]
    assert not upward, f"{name} ({ORDER[me]}) imports from above: {upward}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PKG)))
def test_each_module_stays_small(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PKG)} has {n} lines (split it by job)"
