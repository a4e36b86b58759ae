"""JUnit XML for CI: one ``<testcase>`` per drill run, its metrics as properties, a
``<failure>`` whose message comes from the verdict, ``<skipped>`` with its reason.

::

    <testsuites name="faultbook" tests="3" failures="1" errors="0" skipped="1" time="…">
      <testsuite name="smoke" tests="3" failures="1" errors="0" skipped="1" time="…"
                 timestamp="2026-11-27T10:00:00" hostname="…">
        <testcase name="db-primary-crash" classname="faultbook.db-failover" time="52.104">
          <properties>
            <property name="runbook" value="db-failover"/>
            <property name="rto_s" value="4.25"/> …
          </properties>
          <failure type="verdict" message="rto_s=41.2 > 30">…each failed step…</failure>
        </testcase>
      </testsuite>
    </testsuites>

This is the common JUnit format (Ant/Surefire's elements, as Jenkins, GitLab and
GitHub test reporters read them) with ``<properties>`` inside a test case, which
those tools show but Surefire's own XSD (junit-10.xsd) does not list; the unit
test validates against a schema of exactly this layout
(tests/unit/fixtures/junit.xsd) with ``xmlschema``.

``write(results, path)`` takes result.json documents, paths to result.json (or to a
run directory), ``report.runner.RunOutcome``\\ s, suite entry results or ``Case``\\ s.
``check_path`` refuses a path ``write`` could not write before anything runs
(``faultbook run --junit``); ``run_case`` is the one case of a ``faultbook run``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from faultbook.errors import ResultError, UsageError
from faultbook.results import evaluate_objectives
from faultbook.suites.score import drill_key


@dataclass(frozen=True)
class Case:
    name: str
    classname: str
    seconds: float | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    failure: str = ""  # one line: the failed steps and missed objectives
    failure_detail: str = ""
    skipped: str = ""
    started_at: str | None = None


def _seconds(doc: Mapping[str, Any]) -> float | None:
    try:
        a = datetime.fromisoformat(str(doc["started_at"]).replace("Z", "+00:00"))
        b = datetime.fromisoformat(str(doc["finished_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return max(0.0, (b - a).total_seconds())


def problems(doc: Mapping[str, Any], limits: Mapping[str, float] | None = None) -> list[str]:
    """What made a run fail: its failed steps, then its missed objectives."""
    out = [f"{s['name']}: {s['detail']}" for s in doc.get("steps", []) if s["status"] == "failed"]
    goals = {**doc.get("objectives", {}), **(limits or {})}
    out += [
        f"{o['metric']}={o['value']} > {o['limit']:g}"
        for o in evaluate_objectives(doc.get("metrics", {}), goals)
        if not o["met"]
    ]
    return out


def case_from_result(
    doc: Mapping[str, Any], name: str | None = None, limits: Mapping[str, float] | None = None
) -> Case:
    """A test case for one run's result.json."""
    runbook = str(doc.get("runbook", "run"))
    props: dict[str, Any] = {"runbook": runbook, "mode": doc.get("mode")}
    fault = doc.get("fault") or {}
    if fault:
        props |= {"fault": fault.get("kind"), "target": fault.get("target")}
    params = doc.get("parameters") or {}
    if "mode" in params:
        props["mode"] = params["mode"]
    props |= {k: v for k, v in (doc.get("metrics") or {}).items() if v is not None}
    props |= {
        f"objective.{k}": v for k, v in {**doc.get("objectives", {}), **(limits or {})}.items()
    }
    why = problems(doc, limits)
    failed = doc.get("verdict") != "pass" or bool(why)
    return Case(
        name=name or runbook,
        classname=f"faultbook.{runbook}",
        seconds=_seconds(doc),
        properties=props,
        failure=("; ".join(why) or f"verdict {doc.get('verdict')!r}") if failed else "",
        failure_detail="\n".join(why),
        started_at=doc.get("started_at"),
    )


def run_case(item: Any) -> Case:
    """The test case of one ``faultbook run`` (a ``RunOutcome``, a result.json document or
    its path): named after its drill (``db-failover/host-crash``, as ``faultbook history
    --junit`` names it), or after its runbook when it is not a drill."""
    if isinstance(item, Mapping):
        doc: Mapping[str, Any] = item
    else:
        result = getattr(item, "result", item)
        if not isinstance(result, str | Path):
            raise ResultError(f"cannot make a JUnit test case from {type(item).__name__}")
        doc = _load(Path(result))
    return case_from_result(doc, drill_key(doc) or str(doc.get("runbook", "run")))


def _load(path: Path) -> dict[str, Any]:
    p = path / "result.json" if path.is_dir() else path
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ResultError(f"{p}: not a readable result.json ({exc})") from None
    if not isinstance(doc, dict):
        raise ResultError(f"{p}: not a result.json document")
    return doc


def to_case(item: Any) -> Case:
    """A Case from whatever ``write`` accepts."""
    if isinstance(item, Case):
        return item
    if isinstance(item, Mapping):
        return case_from_result(item)
    if isinstance(item, str | Path):
        return case_from_result(_load(Path(item)))
    entry = getattr(item, "entry", None)
    if entry is not None and hasattr(item, "status"):  # a suite's EntryResult
        if item.status == "skipped" or item.doc is None:
            return Case(entry.name, f"faultbook.{entry.runbook}", 0.0, skipped=item.reason)
        return case_from_result(item.doc, entry.name, entry.limits)
    result = getattr(item, "result", None)
    if isinstance(result, Path):  # report.runner.RunOutcome
        return case_from_result(_load(result))
    raise ResultError(f"cannot make a JUnit test case from {type(item).__name__}")


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else str(v)


def _time(s: float | None) -> str:
    return f"{s or 0.0:.3f}"


def to_xml(items: Iterable[Any], suite: str = "faultbook") -> ET.ElementTree:
    cases = [to_case(i) for i in items]
    failures = sum(bool(c.failure) for c in cases)
    skipped = sum(bool(c.skipped) for c in cases)
    total = sum(c.seconds or 0.0 for c in cases)
    counts = {
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": _time(total),
    }
    root = ET.Element("testsuites", {"name": "faultbook", **counts})
    started = min((c.started_at for c in cases if c.started_at), default=None)
    attrs = {"name": suite, **counts, "hostname": socket.gethostname()}
    if started:
        attrs["timestamp"] = started.replace("Z", "").split(".")[0]
    ts = ET.SubElement(root, "testsuite", attrs)
    for c in cases:
        tc = ET.SubElement(
            ts, "testcase", {"name": c.name, "classname": c.classname, "time": _time(c.seconds)}
        )
        if c.properties:
            props = ET.SubElement(tc, "properties")
            for k, v in c.properties.items():
                ET.SubElement(props, "property", {"name": k, "value": _value(v)})
        if c.skipped:
            ET.SubElement(tc, "skipped", {"message": c.skipped})
        elif c.failure:
            f = ET.SubElement(tc, "failure", {"type": "verdict", "message": c.failure})
            f.text = c.failure_detail or c.failure
    ET.indent(root)
    return ET.ElementTree(root)


def check_path(path: str | Path) -> Path:
    """PATH made ready for ``write`` before a run starts: its directory created and
    writable, PATH itself not a directory and writable if it exists. A one-line
    ``UsageError`` (exit 2) otherwise, so a bad ``--junit`` costs no run. Returns PATH
    resolved."""
    given = Path(path)
    try:
        out = given.resolve()
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        above = next(d for d in (out.parent, *out.parent.parents) if d.exists())
        if not above.is_dir():  # mkdir would only say "File exists"
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
        if out.exists():
            with open(out, "ab"):
                pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UsageError(f"--junit {str(given)!r}: cannot write it: {why}") from None
    return out


def write(results: Iterable[Any], path: str | Path, suite: str = "faultbook") -> Path:
    """Write JUnit XML for RESULTS to PATH (one test case each); returns PATH."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        to_xml(results, suite).write(out, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise ResultError(f"--junit {str(path)!r}: cannot write it: {exc.strerror}") from None
    return out
