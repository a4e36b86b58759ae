"""Runbooks are committed clean and declare their parameters."""

from __future__ import annotations

import nbformat
import pytest

from faultbook.paths import RUNBOOKS_DIR

NOTEBOOKS = sorted(RUNBOOKS_DIR.glob("*.ipynb"))


def test_there_are_runbooks() -> None:
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: object) -> None:
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path}: a code cell has outputs"
            assert cell.execution_count is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_has_one_parameters_cell_with_typed_commented_defaults(path: object) -> None:
    nb = nbformat.read(str(path), as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        if line and not line.startswith("#"):
            assert ": " in line.split("=")[0] and "#" in line, f"untyped or uncommented: {line}"
    assert "result_dir" in tagged[0].source


SQL = ("SELECT ", "INSERT ", "UPDATE ", "DELETE FROM", "CREATE ", "DROP ")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cells_are_thin_no_def_loop_try_or_sql(path: object) -> None:
    """Runbooks call the library one step at a time: the logic lives in lib, tested."""
    import ast

    nb = nbformat.read(str(path), as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        for node in ast.walk(tree):
            bad = (
                ast.FunctionDef,
                ast.AsyncFunctionDef,
                ast.Lambda,
                ast.ClassDef,
                ast.For,
                ast.While,
                ast.Try,
                ast.ListComp,
                ast.DictComp,
                ast.SetComp,
                ast.GeneratorExp,
            )
            assert not isinstance(node, bad), (
                f"{path} cell {i}: {type(node).__name__} at line {node.lineno}"
            )
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.lstrip().upper().startswith(SQL), (
                    f"{path} cell {i}: SQL in a cell: {node.value[:40]!r}"
                )
