"""A drill suite: a YAML file of runbooks to run in turn, validated on load.

::

    name: smoke                      # default: the file's stem
    description: health, then one drill per tier
    entry_timeout_s: 900             # papermill's execution timeout per cell (default none)
    steady_timeout_s: 120            # how long an entry waits for steady state before it is skipped
    report: demo                     # optional: also write the demo report (report.demo)
    entries:
      - name: db-primary-crash       # default: the runbook's name; unique in the suite
        runbook: db-failover
        parameters: {mode: drill, fault: host-crash}
        target: {role: primary}      # or a list; {role: standby, param: new_primary}
        objectives: {max_rto_s: 30, p99_ms: 2000}
        timeout_s: 600               # this entry's execution timeout
        require_steady_state: true   # default true

Parameters are checked against the runbook's parameters cell
(``report.runner.validate``: unknown name, wrong type, nan); ``inventory`` is
set by ``suite run -i`` and ``result_dir`` by the runner, so neither may be
given. An objective is either a ``max_*`` parameter of the runbook (or a metric
whose ``max_<metric>`` parameter the runbook declares: it becomes that
parameter) or a limit on a metric the runbook records, which the suite checks
against result.json afterwards. A target names a role, never a host; it is
resolved against the inventory when the entry starts (``suites.targets``).
Every error names the suite and the entry: ``suite smoke, entry 3
(db-failover): unknown parameter 'tagret' …``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from faultbook.errors import FaultbookError, SuiteError
from faultbook.paths import REPO_ROOT
from faultbook.report import runner
from faultbook.results import BASE_METRICS

SUITES_DIR = REPO_ROOT / "suites"
ROLES = ("primary", "standby", "any-standby", "web", "vip-holder", "lb", "backup", "mon")
# What a drill records besides the base metrics (drills.impact.DrillResult.metrics).
METRICS = (
    *BASE_METRICS,
    "time_to_first_write_s",
    "failed_writes",
    "failed_reads",
    "outages",
)
# Set by `suite run` and the runner, never by a suite entry.
SET_BY_SUITE = ("inventory", *runner.RUNNER_PARAMS)
SUITE_KEYS = ("name", "description", "entries", "entry_timeout_s", "steady_timeout_s", "report")
ENTRY_KEYS = (
    "name",
    "runbook",
    "parameters",
    "target",
    "objectives",
    "timeout_s",
    "require_steady_state",
    "load_from",
)
REPORTS = ("demo",)


@dataclass(frozen=True)
class Target:
    role: str
    param: str = "target"


@dataclass(frozen=True)
class Entry:
    index: int  # 1-based, in file order
    name: str
    runbook: str
    params: dict[str, Any] = field(default_factory=dict)  # checked and coerced
    limits: dict[str, float] = field(default_factory=dict)  # metric limits the suite checks
    targets: tuple[Target, ...] = ()
    timeout_s: float | None = None
    require_steady_state: bool = True
    # An earlier stress entry whose soak rate becomes this entry's load_rps at run time.
    load_from: str | None = None

    def objectives(self) -> dict[str, float]:
        """Every objective: the ``max_*`` parameters (not -1) and the suite's limits."""
        out = {
            k.removeprefix("max_"): float(v)
            for k, v in self.params.items()
            if k.startswith("max_") and isinstance(v, int | float) and v != -1
        }
        return out | self.limits


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    entries: tuple[Entry, ...]
    description: str = ""
    entry_timeout_s: float | None = None
    steady_timeout_s: float = 120.0
    report: str | None = None

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise SuiteError(f"suite {self.name} has no entry {name!r}")


def available() -> list[str]:
    """The suites shipped in suites/."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yml"))


def suite_path(name: str | Path) -> Path:
    """A suite by name (suites/NAME.yml) or as a path to a YAML file."""
    p = Path(name)
    if p.suffix in (".yml", ".yaml") and p.is_file():
        return p
    shipped = SUITES_DIR / f"{name}.yml"
    if shipped.is_file():
        return shipped
    raise SuiteError(
        f"unknown suite {str(name)!r}; expected a YAML file or one of: {', '.join(available())}"
    )


def load(name: str | Path) -> Suite:
    """Read and validate a suite; SuiteError (one line, naming the entry) when it is bad."""
    path = suite_path(name)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        why = getattr(exc, "problem", None) or "not valid YAML"
        raise SuiteError(f"suite {path.stem}: {path}{where}: {why}") from None
    except OSError as exc:
        raise SuiteError(f"suite {path.stem}: {path} cannot be read ({exc.strerror})") from None
    return parse(doc, path)


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SuiteError(f"{what} must be a number of seconds > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise SuiteError(f"{what} must be a number of seconds > 0, got {value!r}")
    return float(value)


def parse(doc: Any, path: Path) -> Suite:
    name = path.stem
    if isinstance(doc, Mapping) and isinstance(doc.get("name"), str):
        name = doc["name"]
    where = f"suite {name}"
    if not isinstance(doc, Mapping):
        raise SuiteError(f"{where}: expected a mapping with 'entries', got {type(doc).__name__}")
    unknown = [k for k in doc if k not in SUITE_KEYS]
    if unknown:
        raise SuiteError(
            f"{where}: unknown key {unknown[0]!r}; expected some of {', '.join(SUITE_KEYS)}"
        )
    raw = doc.get("entries")
    if not isinstance(raw, list) or not raw:
        raise SuiteError(f"{where}: 'entries' must be a non-empty list of runbooks")
    timeout = doc.get("entry_timeout_s")
    steady = doc.get("steady_timeout_s", 120.0)
    report = doc.get("report")
    if report is not None and report not in REPORTS:
        raise SuiteError(f"{where}: report must be one of {', '.join(REPORTS)}, got {report!r}")
    entries: list[Entry] = []
    for i, item in enumerate(raw, 1):
        e = _entry(where, i, item)
        if any(other.name == e.name for other in entries):
            raise SuiteError(
                f"{where}, entry {i} ({e.name}): the name is taken by an earlier entry; "
                "give each entry of one runbook its own 'name'"
            )
        if e.load_from is not None:
            _check_load_from(f"{where}, entry {i} ({e.name})", e, entries)
        entries.append(e)
    return Suite(
        name=name,
        path=path,
        entries=tuple(entries),
        description=str(doc.get("description", "")),
        entry_timeout_s=None if timeout is None else _seconds(timeout, f"{where}: entry_timeout_s"),
        steady_timeout_s=_seconds(steady, f"{where}: steady_timeout_s"),
        report=report,
    )


def _check_load_from(where: str, e: Entry, earlier: list[Entry]) -> None:
    """``load_from`` names an earlier stress entry, and the entry's runbook has a load."""
    source = next((x for x in earlier if x.name == e.load_from), None)
    if source is None or source.runbook != "stress":
        stress = [x.name for x in earlier if x.runbook == "stress"]
        raise SuiteError(
            f"{where}: load_from {e.load_from!r} is not an earlier stress entry; expected one "
            f"of {', '.join(stress) or '(none: add a stress entry before it)'}"
        )
    if "load_rps" not in runner.parameters(e.runbook):
        raise SuiteError(f"{where}: load_from needs a runbook with load_rps; {e.runbook} has none")


def _entry(suite: str, i: int, item: Any) -> Entry:
    if not isinstance(item, Mapping) or not isinstance(item.get("runbook"), str):
        raise SuiteError(f"{suite}, entry {i}: expected a mapping with a 'runbook', got {item!r}")
    book = item["runbook"]
    where = f"{suite}, entry {i} ({item.get('name') or book})"
    unknown = [k for k in item if k not in ENTRY_KEYS]
    if unknown:
        raise SuiteError(
            f"{where}: unknown key {unknown[0]!r}; expected some of {', '.join(ENTRY_KEYS)}"
        )
    try:
        stem = runner.runbook_path(book).stem
        declared = runner.parameters(stem)
        given = item.get("parameters") or {}
        if not isinstance(given, Mapping):
            raise SuiteError(f"'parameters' must be a mapping, got {given!r}")
        for k in given:
            if k in SET_BY_SUITE:
                raise SuiteError(f"parameter {k!r} is set by the suite run, not by an entry")
        targets = _targets(item.get("target"), declared, given)
        params, limits = _objectives(item.get("objectives") or {}, declared, dict(given))
        params = runner.validate(stem, params)
        timeout = item.get("timeout_s")
        steady = item.get("require_steady_state", True)
        if not isinstance(steady, bool):
            raise SuiteError(f"require_steady_state must be true or false, got {steady!r}")
        return Entry(
            index=i,
            name=str(item.get("name") or stem),
            runbook=stem,
            params=params,
            limits=limits,
            targets=targets,
            timeout_s=None if timeout is None else _seconds(timeout, "timeout_s"),
            require_steady_state=steady,
            load_from=None if item.get("load_from") is None else str(item["load_from"]),
        )
    except FaultbookError as exc:
        raise SuiteError(f"{where}: {exc}") from None


def _targets(
    raw: Any, declared: Mapping[str, runner.Param], given: Mapping[str, Any]
) -> tuple[Target, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for t in items:
        if not isinstance(t, Mapping) or "role" not in t or set(t) - {"role", "param"}:
            raise SuiteError(f"target must be {{role: ROLE}} or {{role: ROLE, param: NAME}}: {t!r}")
        role, param = t["role"], t.get("param", "target")
        if role not in ROLES:
            raise SuiteError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if param not in declared or param in SET_BY_SUITE:
            raise SuiteError(f"target param {param!r} is not a parameter of the runbook")
        if param in given:
            raise SuiteError(f"parameter {param!r} is given twice: as a parameter and a target")
        out.append(Target(role, param))
    return tuple(out)


def _objectives(
    raw: Any, declared: Mapping[str, runner.Param], params: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Objectives into the runbook's max_* parameters, or metric limits for the suite."""
    if not isinstance(raw, Mapping):
        raise SuiteError(f"'objectives' must be a mapping of limits, got {raw!r}")
    limits: dict[str, float] = {}
    for k, v in raw.items():
        param = k if k.startswith("max_") else f"max_{k}"
        if param in declared:
            if param in params:
                raise SuiteError(f"objective {k!r} is also given as parameter {param!r}")
            if isinstance(v, bool) or not isinstance(v, int | float) or not (v >= 0 or v == -1):
                raise SuiteError(f"objective {k!r} must be a number >= 0 (or -1: none), got {v!r}")
            params[param] = v
        elif k in METRICS:
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise SuiteError(f"objective {k!r} must be a number >= 0, got {v!r}")
            if not math.isfinite(v):
                raise SuiteError(f"objective {k!r} must be finite, got {v!r}")
            limits[k] = float(v)
        else:
            own = [p for p in declared if p.startswith("max_")]
            raise SuiteError(
                f"unknown objective {k!r}; expected one of the runbook's "
                f"{', '.join(own) or '(no max_* parameters)'} or a metric: {', '.join(METRICS)}"
            )
    return params, limits
