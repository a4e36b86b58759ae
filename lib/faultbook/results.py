"""result.json: one schema for every runbook (see DESIGN.md), and the recorder notebooks use.

A runbook creates a ``Run``, wraps each step in ``with run.step(name):``,
sets metrics and objectives, then ``run.finish()`` computes the verdict and
``run.save(dir)`` writes result.json. Secrets in parameters are redacted.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MODES = ("drill", "incident")
STEP_STATUSES = ("ok", "failed", "skipped")
SECRET_NAME = re.compile(r"pass(word|phrase)?|secret|token|key$|credential", re.I)
REDACTED = "***"

TOP_KEYS: dict[str, type | tuple[type, ...]] = {
    "runbook": str,
    "mode": str,
    "started_at": str,
    "finished_at": str,
    "parameters": dict,
    "steps": list,
    "fault": (dict, type(None)),
    "detected_at": (str, type(None)),
    "recovered_at": (str, type(None)),
    "metrics": dict,
    "objectives": dict,
    "verdict": str,
}
BASE_METRICS = (
    "rto_s",
    "lost_writes",
    "acked_writes",
    "failed_requests",
    "total_requests",
    "p50_ms",
    "p99_ms",
)


def utcnow() -> str:
    return iso(datetime.now(UTC))


def iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
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

    @classmethod
    def start(cls, runbook: str, mode: str, parameters: Mapping[str, Any]) -> Run:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
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
        d = asdict(self)
        d["metrics"] = {k: _jsonable(v) for k, v in self.metrics.items()}
        return d

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
            raise ValueError("result does not match the schema: " + "; ".join(problems))
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


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Return the ways ``doc`` departs from the result.json schema (empty when it conforms)."""
    problems = []
    for key, typ in TOP_KEYS.items():
        if key not in doc:
            problems.append(f"missing key {key!r}")
        elif not isinstance(doc[key], typ):
            problems.append(f"{key!r} has type {type(doc[key]).__name__}")
    if problems:
        return problems
    if doc["mode"] not in MODES:
        problems.append(f"mode {doc['mode']!r} is not one of {MODES}")
    if doc["verdict"] not in ("pass", "fail"):
        problems.append(f"verdict {doc['verdict']!r} is not pass or fail")
    for key in ("started_at", "finished_at", "detected_at", "recovered_at"):
        if doc.get(key) is not None and not _is_utc(doc[key]):
            problems.append(f"{key} {doc[key]!r} is not ISO 8601 UTC")
    for i, s in enumerate(doc["steps"]):
        for k in ("name", "started_at", "finished_at", "status", "detail"):
            if k not in s:
                problems.append(f"steps[{i}] lacks {k!r}")
        if s.get("status") not in STEP_STATUSES:
            problems.append(f"steps[{i}].status {s.get('status')!r} is not one of {STEP_STATUSES}")
    if doc["fault"] is not None:
        for k in ("kind", "target", "injected_at", "reverted_at"):
            if k not in doc["fault"]:
                problems.append(f"fault lacks {k!r}")
    for k in BASE_METRICS:
        if k not in doc["metrics"]:
            problems.append(f"metrics lacks {k!r}")
    for k, v in doc["parameters"].items():
        if SECRET_NAME.search(k) and v != REDACTED:
            problems.append(f"parameter {k!r} looks secret but is not redacted")
    return problems


def _is_utc(s: str) -> bool:
    try:
        ts = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        return False
    return ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


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
