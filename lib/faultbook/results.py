"""result.json: one schema for every runbook, and the recorder notebooks use.

A runbook creates a ``Run``, wraps each step in ``with run.step(name):``,
sets metrics and objectives, then ``run.finish()`` computes the verdict and
``run.save(dir)`` writes result.json. Secrets in parameters are redacted.

The schema is a JSON Schema (draft 2020-12) shipped in the package,
``faultbook/schema/result.schema.json``; :func:`validate` checks a document
against it with ``jsonschema`` and says what is wrong, one line per problem.
Every document carries ``schema_version`` (:data:`SCHEMA_VERSION`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # jsonschema costs about a second to import (its format
    # libraries build parsers at import): loaded on the first validation, so a
    # run that starts from an alert does not wait for it.
    import jsonschema
    from jsonschema.protocols import Validator

from faultbook.errors import ResultError

SCHEMA_VERSION = 1
"""The ``schema_version`` every result.json carries (the schema's ``const``)."""
SCHEMA_RESOURCE = ("faultbook.schema", "result.schema.json")

MODES = ("drill", "incident")
STEP_STATUSES = ("ok", "failed", "skipped")
SECRET_NAME = re.compile(r"pass(word|phrase)?|secret|token|key$|credential", re.I)
REDACTED = "***"

# Every result's metrics have these keys (the schema's metrics.required says the same).
BASE_METRICS = (
    "rto_s",
    "lost_writes",
    "acked_writes",
    "failed_requests",
    "total_requests",
    "p50_ms",
    "p99_ms",
)
# Optional top-level keys: written only when set.
OPTIONAL_KEYS = ("rollback", "confirmations", "preflight", "logs")


def utcnow() -> str:
    return iso(datetime.now(UTC))


def iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ResultError("timestamps must be timezone-aware (UTC)")
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redact(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (REDACTED if SECRET_NAME.search(k) else v) for k, v in params.items()}


@dataclass
class Step:
    name: str
    started_at: str
    finished_at: str | None = None
    status: str = "ok"
    detail: str = ""


@dataclass
class Run:
    runbook: str
    mode: str
    parameters: dict[str, Any]
    started_at: str = field(default_factory=utcnow)
    finished_at: str | None = None
    steps: list[Step] = field(default_factory=list)
    fault: dict[str, Any] | None = None
    detected_at: str | None = None
    recovered_at: str | None = None
    metrics: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(BASE_METRICS))
    objectives: dict[str, float] = field(default_factory=dict)
    verdict: str | None = None
    # {"faults": [{kind, target, outcome, detail, at}], "steady_state": {ok, detail}}
    rollback: dict[str, Any] | None = None
    confirmations: list[dict[str, Any]] = field(default_factory=list)
    preflight: dict[str, Any] | None = None
    # the central logs' error counts of the run's hosts (faultbook.logs.RunErrors.record)
    logs: dict[str, Any] | None = None
    schema_version: int = field(default=SCHEMA_VERSION, init=False)

    @classmethod
    def start(cls, runbook: str, mode: str, parameters: Mapping[str, Any]) -> Run:
        if mode not in MODES:
            raise ResultError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        return cls(runbook=runbook, mode=mode, parameters=redact(parameters))

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Record a step; an exception marks it failed (with the message) and propagates."""
        s = Step(name=name, started_at=utcnow())
        self.steps.append(s)
        try:
            yield s
        except BaseException as exc:
            s.status = "failed"
            s.detail = s.detail or f"{type(exc).__name__}: {exc}"
            raise
        finally:
            s.finished_at = utcnow()

    def skip(self, name: str, why: str) -> None:
        now = utcnow()
        self.steps.append(Step(name, now, now, "skipped", why))

    def fail(self, name: str, detail: str) -> None:
        """Record a failed check that did not raise (e.g. a host down)."""
        now = utcnow()
        self.steps.append(Step(name, now, now, "failed", detail))

    def objective_report(self) -> list[dict[str, Any]]:
        return evaluate_objectives(self.metrics, self.objectives)

    def finish(self) -> dict[str, Any]:
        self.finished_at = utcnow()
        failed_steps = [s for s in self.steps if s.status == "failed"]
        missed = [o for o in self.objective_report() if not o["met"]]
        self.verdict = "fail" if failed_steps or missed else "pass"
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The result.json document: schema_version first, optional keys only when set."""
        d = asdict(self)
        d["metrics"] = {k: _jsonable(v) for k, v in self.metrics.items()}
        for k in OPTIONAL_KEYS:
            if d[k] is None or d[k] == []:
                del d[k]
        return {"schema_version": d.pop("schema_version"), **d}

    def save(self, directory: str | Path | None) -> Path | None:
        """Write result.json into ``directory`` (no-op when it is empty/None)."""
        if not directory:
            return None
        if self.verdict is None:
            self.finish()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "result.json"
        doc = self.to_dict()
        problems = validate(doc)
        if problems:
            raise ResultError("result does not match the schema: " + "; ".join(problems))
        path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        return path


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _jsonable(v.item())
    return v


def evaluate_objectives(
    metrics: Mapping[str, Any], objectives: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Each objective is an upper limit on a metric. A missing metric misses the objective."""
    out = []
    for name, limit in objectives.items():
        value = metrics.get(name)
        met = (
            value is not None
            and not (isinstance(value, float) and math.isnan(value))
            and float(value) <= float(limit)
        )
        out.append({"metric": name, "value": value, "limit": limit, "met": bool(met)})
    return out


def schema() -> dict[str, Any]:
    """The result.json JSON Schema, as shipped in the package (a copy)."""
    return copy.deepcopy(_load_schema())


@functools.cache
def _load_schema() -> dict[str, Any]:
    package, name = SCHEMA_RESOURCE
    doc: dict[str, Any] = json.loads(resources.files(package).joinpath(name).read_text("utf-8"))
    return doc


def _is_utc(s: object) -> bool:
    """A timestamp with a zero UTC offset (the schema's pattern asks for the Z form)."""
    if not isinstance(s, str):
        return True  # "type" says what is wrong with it
    offset = datetime.fromisoformat(s.replace("Z", "+00:00")).utcoffset()
    return offset is not None and offset.total_seconds() == 0


@functools.cache
def _validator() -> Validator:
    import jsonschema
    from jsonschema.validators import validator_for

    formats = jsonschema.FormatChecker(formats=())
    formats.checks("date-time", raises=ValueError)(_is_utc)
    doc = _load_schema()
    cls = validator_for(doc)
    cls.check_schema(doc)
    return cls(doc, format_checker=formats)


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Return the ways ``doc`` departs from the result.json schema (empty when it conforms).

    One line per problem, each naming the field first (``steps[0].status``, ``metrics``, ...).
    """
    errors = sorted(
        _validator().iter_errors(doc), key=lambda e: ([str(p) for p in e.path], e.message)
    )
    return list(dict.fromkeys(_problem(e) for e in errors))  # pattern and format may agree


def _where(path: Iterable[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _keys(names: list[str]) -> str:
    return "key" if len(names) == 1 else "keys"


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _problem(e: jsonschema.ValidationError) -> str:
    """One line for one schema violation, naming the field first."""
    where = _where(e.path)
    field_ = where or "document"
    value, kind = e.instance, e.validator
    rule: Any = e.validator_value
    schema = e.schema if isinstance(e.schema, dict) else {}
    if kind == "required":
        missing = [k for k in rule if isinstance(value, dict) and k not in value]
        names = ", ".join(repr(k) for k in missing) or e.message
        return f"{where} lacks {names}" if where else f"missing {_keys(missing)} {names}"
    if kind in ("pattern", "format") and schema.get("format") == "date-time":
        return f"{where} {_short(value)} is not ISO 8601 UTC (YYYY-MM-DDTHH:MM:SS[.fff]Z)"
    if kind == "const" and len(e.path) == 2 and e.path[0] == "parameters":
        return f"parameter {e.path[-1]!r} looks secret but is not redacted (expected {rule!r})"
    if kind == "const":
        return f"{field_} is {_short(value)}, expected {rule!r}"
    if kind == "enum":
        return f"{field_} {_short(value)} is not one of {', '.join(map(str, rule))}"
    if kind == "type":
        expected = [rule] if isinstance(rule, str) else list(rule)
        either = ", ".join(expected[:-1]) + " or " if len(expected) > 1 else ""
        return f"{field_} has type {_json_type(value)}, expected {either}{expected[-1]}"
    if kind == "additionalProperties" and rule is False and isinstance(value, dict):
        extra = [k for k in value if k not in schema.get("properties", {})]
        return f"{field_} has unknown {_keys(extra)} {', '.join(map(repr, extra))}"
    return f"{field_}: {e.message}".replace("\n", " ")


@dataclass(frozen=True)
class Summary:
    """What a caller needs from a finished run's result.json."""

    runbook: str
    verdict: str
    failed_steps: list[str]
    missed_objectives: list[str]

    @classmethod
    def from_file(cls, path: Path) -> Summary:
        doc = json.loads(path.read_text())
        return cls(
            runbook=doc["runbook"],
            verdict=doc["verdict"],
            failed_steps=[
                f"{s['name']}: {s['detail']}" for s in doc["steps"] if s["status"] == "failed"
            ],
            missed_objectives=[
                f"{o['metric']}={o['value']} > {o['limit']}"
                for o in evaluate_objectives(doc["metrics"], doc["objectives"])
                if not o["met"]
            ],
        )
