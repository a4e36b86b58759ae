from __future__ import annotations

import json
from pathlib import Path

import pytest

from faultbook.results import Run, Summary, evaluate_objectives, validate


def test_a_clean_run_passes_and_matches_the_schema(tmp_path: Path) -> None:
    run = Run.start("health-check", "incident", {"inventory": "lab", "vault_password": "s3cret"})
    with run.step("probe"):
        pass
    run.metrics["rto_s"] = float("nan")
    path = run.save(tmp_path)
    assert path is not None
    doc = json.loads(path.read_text())
    assert validate(doc) == []
    assert doc["verdict"] == "pass"
    assert doc["parameters"]["vault_password"] == "***"
    assert "s3cret" not in path.read_text()
    assert doc["metrics"]["rto_s"] is None
    assert doc["started_at"].endswith("Z") and doc["steps"][0]["finished_at"].endswith("Z")


def test_a_failed_step_is_recorded_and_fails_the_verdict() -> None:
    run = Run.start("x", "drill", {})
    with pytest.raises(RuntimeError), run.step("inject"):
        raise RuntimeError("boom")
    doc = run.finish()
    assert doc["steps"][0]["status"] == "failed"
    assert doc["steps"][0]["detail"] == "RuntimeError: boom"
    assert doc["verdict"] == "fail"


def test_a_missed_objective_fails_the_verdict(tmp_path: Path) -> None:
    run = Run.start("x", "drill", {})
    run.metrics.update(rto_s=12.0, lost_writes=0)
    run.objectives = {"rto_s": 10, "lost_writes": 0}
    run.save(tmp_path)
    s = Summary.from_file(tmp_path / "result.json")
    assert s.verdict == "fail"
    assert s.missed_objectives == ["rto_s=12.0 > 10"]


def test_objective_on_a_missing_metric_is_missed() -> None:
    rep = evaluate_objectives({"rto_s": None}, {"rto_s": 5, "lost_writes": 0})
    assert [o["met"] for o in rep] == [False, False]


def test_validate_reports_schema_departures() -> None:
    run = Run.start("x", "drill", {})
    doc = run.finish()
    doc["mode"] = "panic"
    doc["finished_at"] = "2026-01-01T00:00:00+02:00"
    doc["steps"] = [{"name": "a", "status": "weird"}]
    del doc["metrics"]["p99_ms"]
    doc["parameters"] = {"api_token": "abc"}
    problems = "\n".join(validate(doc))
    for fragment in (
        "mode 'panic'",
        "finished_at",
        "steps[0] lacks 'started_at'",
        "status 'weird'",
        "metrics lacks 'p99_ms'",
        "'api_token' looks secret",
    ):
        assert fragment in problems
    assert validate({"runbook": "x"})  # missing keys are reported, not raised


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        Run.start("x", "chaos", {})
