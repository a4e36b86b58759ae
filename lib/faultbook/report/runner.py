"""Run a runbook with papermill: validate parameters, execute, render HTML, collect result.json.

papermill injects unknown parameters silently, so faultbook checks every
parameter against the notebook's ``parameters`` cell first: an unknown name
or a value that does not fit the declared type is a usage error (exit 2)
and nothing runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from faultbook.errors import ParameterError, RunbookNotFound
from faultbook.paths import RUNBOOKS_DIR
from faultbook.results import MODES, Run, Summary

log = logging.getLogger(__name__)

# Parameters the runner itself supplies; runbooks declare them so they are not "unknown".
RUNNER_PARAMS = ("result_dir",)
_BOOL = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: str
    help: str


def runbooks() -> list[str]:
    return sorted(p.stem for p in RUNBOOKS_DIR.glob("*.ipynb"))


def runbook_path(name: str) -> Path:
    stem = Path(name).stem if name.endswith(".ipynb") else name
    path = RUNBOOKS_DIR / f"{stem}.ipynb"
    if not path.is_file():
        raise RunbookNotFound(f"unknown runbook {name!r}; available: {', '.join(runbooks())}")
    return path


def parameters(name: str) -> dict[str, Param]:
    """The declared parameters of a runbook, from its cell tagged ``parameters``."""
    import papermill

    info = papermill.inspect_notebook(str(runbook_path(name)))
    return {
        k: Param(
            k,
            str(v.get("inferred_type_name") or "None"),
            str(v.get("default")),
            str(v.get("help") or ""),
        )
        for k, v in info.items()
    }


def coerce(param: Param, value: Any) -> Any:
    """Convert a CLI string (or a Python value) to the parameter's declared type."""
    t = param.type.replace(" ", "")
    expected = f"parameter {param.name!r} expects {t}"
    if not isinstance(value, str):
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, int | float) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }.get(t.split("|")[0], True)
        if not ok:
            raise ParameterError(f"{expected}, got {type(value).__name__} {value!r}")
        return float(value) if t == "float" else value
    try:
        if t == "int":
            return int(value)
        if t == "float":
            return float(value)
        if t == "bool":
            return _BOOL[value.strip().lower()]
        if t.startswith(("list", "dict")):
            parsed = yaml.safe_load(value)
            if not isinstance(parsed, list if t.startswith("list") else dict):
                raise ValueError
            return parsed
    except (ValueError, KeyError, yaml.YAMLError):
        raise ParameterError(f"{expected}, got {value!r}") from None
    return value


def validate(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    declared = parameters(name)
    out = {}
    for k, v in given.items():
        if k not in declared or k in RUNNER_PARAMS:
            known = ", ".join(
                f"{p.name} ({p.type})" for p in declared.values() if p.name not in RUNNER_PARAMS
            )
            raise ParameterError(f"unknown parameter {k!r} for {name}; its parameters are: {known}")
        out[k] = coerce(declared[k], v)
    allowed = modes(name)
    if "mode" in out and out["mode"] not in allowed:
        raise ParameterError(
            f"parameter 'mode' expects one of {', '.join(allowed)}, got {out['mode']!r}"
        )
    return out


def modes(name: str) -> tuple[str, ...]:
    """The modes a runbook accepts: notebook metadata faultbook.modes, else incident/drill.

    Planned operations (e.g. db-failover's switchover) are extra modes; result.json
    records them as "drill" (run unattended, measured) with the mode in parameters.
    """
    import nbformat

    nb = nbformat.read(runbook_path(name), as_version=4)
    extra = nb.metadata.get("faultbook", {}).get("modes")
    return tuple(extra) if extra else MODES


@dataclass(frozen=True)
class RunOutcome:
    notebook: Path
    html: Path
    result: Path
    summary: Summary
    usage_error: bool = False  # the notebook stopped on bad input (a UsageError)

    @property
    def exit_code(self) -> int:
        if self.usage_error:
            return 2
        return 0 if self.summary.verdict == "pass" else 1


def _usage_error_names() -> set[str]:
    from faultbook import errors

    names: set[str] = set()
    todo: list[type] = [errors.UsageError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def run(name: str, params: Mapping[str, Any], out_dir: Path) -> RunOutcome:
    """Execute a runbook; write DIR/NAME.ipynb, DIR/NAME.html and DIR/result.json."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    src = runbook_path(name)
    stem = src.stem
    values = validate(stem, params)
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    nb_out = out_dir / f"{stem}.ipynb"
    result = out_dir / "result.json"
    result.unlink(missing_ok=True)
    error: str | None = None
    usage = False
    try:
        papermill.execute_notebook(
            str(src),
            str(nb_out),
            parameters={**values, "result_dir": str(out_dir)},
            kernel_name="python3",
            cwd=str(src.parent),
            progress_bar=False,
            log_output=False,
        )
    except PapermillExecutionError as exc:
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
        usage = exc.ename in _usage_error_names()
        log.error("runbook %s failed at %s", stem, error)
    html = render_html(nb_out)
    if not result.exists():
        # The notebook stopped before it could record its own result.
        mode = str(values.get("mode", "incident"))
        r = Run.start(stem, mode if mode in MODES else "drill", values)
        r.fail("execute", error or "the runbook finished without writing result.json")
        r.finish()
        r.save(out_dir)
    elif error:
        doc = json.loads(result.read_text())
        doc["verdict"] = "fail"
        result.write_text(json.dumps(doc, indent=2) + "\n")
    return RunOutcome(nb_out, html, result, Summary.from_file(result), usage)


def render_html(notebook: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html = notebook.with_suffix(".html")
    html.write_text(body)
    return html
