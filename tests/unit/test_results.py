from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from faultbook.results import (
    BASE_METRICS,
    SCHEMA_VERSION,
    Run,
    Summary,
    evaluate_objectives,
    schema,
    validate,
)


def _doc(**changes: Any) -> dict[str, Any]:
    """A finished drill's document, with CHANGES applied to its top level."""
    run = Run.start("db-failover", "drill", {"inventory": "lab", "vault_password": "s3cret"})
    with run.step("inject"):
        pass
    run.skip("rejoin", "not asked for")
    run.fault = {
        "kind": "crash",
        "target": "db1",
        "injected_at": "2026-01-02T03:04:05.678Z",
        "reverted_at": None,
        "detail": "crash db1",
    }
    run.detected_at = "2026-01-02T03:04:06Z"
    run.metrics.update(rto_s=4.5, lost_writes=0, recovered=True, outages=1)
    run.objectives = {"rto_s": 30, "lost_writes": 0.0}
    doc = run.finish()
    doc.update(changes)
    return doc


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


def test_every_result_carries_the_schema_version(tmp_path: Path) -> None:
    path = Run.start("x", "drill", {}).save(tmp_path)
    assert path is not None
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert next(iter(doc)) == "schema_version"
    assert schema()["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    problems = validate({k: v for k, v in doc.items() if k != "schema_version"})
    assert problems == ["missing key 'schema_version'"]
    assert validate({**doc, "schema_version": 2}) == ["schema_version is 2, expected 1"]


def test_the_schema_ships_in_the_package_and_is_valid_json_schema() -> None:
    text = resources.files("faultbook.schema").joinpath("result.schema.json").read_text("utf-8")
    doc = json.loads(text)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)
    assert "schema_version" in doc["description"]
    assert doc["properties"]["metrics"]["required"] == list(BASE_METRICS)
    assert doc == schema()


def test_a_full_document_with_the_optional_keys_passes() -> None:
    doc = _doc(
        rollback={
            "faults": [
                {
                    "kind": "crash",
                    "target": "db1",
                    "outcome": "reverted",
                    "detail": "started postgresql",
                    "at": "2026-01-02T03:05:00.000Z",
                },
                {
                    "kind": "partition",
                    "target": "web2",
                    "outcome": "already reverted",
                    "detail": "",
                    "at": None,
                },
            ],
            "steady_state": {"ok": True, "detail": "3 db, 3 web, 2 lb up"},
        },
        confirmations=[{"step": "promote", "by": "operator"}],
        preflight={"backups": 3, "anything": ["free", "form"]},
    )
    assert validate(doc) == []
    assert validate(_doc()) == []
    assert "rollback" not in _doc()  # optional keys are written only when set


def test_optional_keys_set_on_the_run_are_written() -> None:
    run = Run.start("x", "drill", {})
    run.rollback = {"faults": [], "steady_state": {"ok": False, "detail": "web2 down"}}
    run.confirmations.append({"step": "fence"})
    run.preflight = {"ok": True}
    doc = run.finish()
    assert doc["rollback"]["steady_state"]["ok"] is False
    assert doc["confirmations"] == [{"step": "fence"}]
    assert doc["preflight"] == {"ok": True}
    assert validate(doc) == []


def test_runbook_specific_metrics_are_allowed_but_must_be_numbers_booleans_or_null() -> None:
    assert validate(_doc(metrics={**_doc()["metrics"], "time_to_first_write_s": 1.5})) == []
    assert validate(_doc(metrics={**_doc()["metrics"], "who": "db2"})) == [
        "metrics.who has type string, expected number, boolean or null"
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mode": "panic"}, "mode 'panic' is not one of drill, incident"),
        ({"verdict": "maybe"}, "verdict 'maybe' is not one of pass, fail"),
        ({"runbook": 3}, "runbook has type number, expected string"),
        ({"finished_at": "2026-01-01T00:00:00+02:00"}, "finished_at '2026-01-01T00:00:00+02:00'"),
        ({"finished_at": "2026-01-01T00:00:00+00:00"}, "finished_at '2026-01-01T00:00:00+00:00'"),
        ({"started_at": "2026-13-01T00:00:00Z"}, "started_at '2026-13-01T00:00:00Z'"),
        ({"detected_at": "yesterday"}, "detected_at 'yesterday' is not ISO 8601 UTC"),
        ({"recovered_at": 5}, "recovered_at has type number, expected string or null"),
        ({"steps": [{"name": "a", "status": "weird"}]}, "steps[0] lacks 'started_at'"),
        ({"steps": "none"}, "steps has type string, expected array"),
        ({"fault": {"kind": "crash"}}, "fault lacks 'target', 'injected_at', 'reverted_at'"),
        ({"fault": "db1"}, "fault has type string, expected object or null"),
        ({"metrics": {"rto_s": 1}}, "metrics lacks 'lost_writes'"),
        ({"objectives": {"rto_s": "5"}}, "objectives.rto_s has type string, expected number"),
        ({"objectives": {"rto_s": None}}, "objectives.rto_s has type null, expected number"),
        ({"parameters": {"api_token": "abc"}}, "parameter 'api_token' looks secret"),
        ({"parameters": {"PGPASSWORD": "abc"}}, "parameter 'PGPASSWORD' looks secret"),
        ({"confirmations": {"step": "x"}}, "confirmations has type object, expected array"),
        ({"preflight": []}, "preflight has type array, expected object"),
        ({"rollback": []}, "rollback has type array, expected object"),
        ({"rollback": {"faults": []}}, "rollback lacks 'steady_state'"),
        (
            {
                "rollback": {
                    "faults": [
                        {
                            "kind": "crash",
                            "target": "db1",
                            "outcome": "undone",
                            "detail": "",
                            "at": None,
                        }
                    ],
                    "steady_state": {"ok": True, "detail": ""},
                }
            },
            "rollback.faults[0].outcome 'undone' is not one of reverted, already reverted, failed",
        ),
        (
            {
                "rollback": {
                    "faults": [
                        {
                            "kind": "crash",
                            "target": "db1",
                            "outcome": "failed",
                            "detail": "",
                            "at": "now",
                        }
                    ],
                    "steady_state": {"ok": "yes", "detail": ""},
                }
            },
            "rollback.faults[0].at 'now' is not ISO 8601 UTC",
        ),
        ({"rollbacks": []}, "document has unknown key 'rollbacks'"),
    ],
)
def test_each_violation_is_one_line_naming_the_field(
    changes: dict[str, Any], expected: str
) -> None:
    problems = validate(_doc(**changes))
    assert problems, changes
    assert all("\n" not in p for p in problems)
    assert any(p.startswith(expected) for p in problems), problems


def test_steps_and_timestamps_are_checked_inside_too() -> None:
    doc = _doc()
    doc["steps"][0]["status"] = "weird"
    doc["steps"][1]["finished_at"] = "2026-01-02 03:04:05"
    doc["fault"]["injected_at"] = "2026-01-02T03:04:05+01:00"
    del doc["metrics"]["p99_ms"]
    assert validate(doc) == [
        "fault.injected_at '2026-01-02T03:04:05+01:00' is not ISO 8601 UTC"
        " (YYYY-MM-DDTHH:MM:SS[.fff]Z)",
        "metrics lacks 'p99_ms'",
        "steps[0].status 'weird' is not one of ok, failed, skipped",
        "steps[1].finished_at '2026-01-02 03:04:05' is not ISO 8601 UTC"
        " (YYYY-MM-DDTHH:MM:SS[.fff]Z)",
    ]


def test_validate_reports_rather_than_raises() -> None:
    assert validate({"runbook": "x"})[0].startswith("missing keys 'schema_version', 'mode'")
    assert validate([]) == ["document has type array, expected object"]  # type: ignore[arg-type]


def test_save_refuses_a_document_that_does_not_conform(tmp_path: Path) -> None:
    run = Run.start("x", "drill", {})
    run.metrics["who"] = "db2"
    with pytest.raises(ValueError, match="metrics.who has type string"):
        run.save(tmp_path)
    assert not (tmp_path / "result.json").exists()


def test_a_failed_step_is_recorded_and_fails_the_verdict() -> None:
    run = Run.start("x", "drill", {})
    with pytest.raises(RuntimeError), run.step("inject"):
        raise RuntimeError("boom")
    doc = run.finish()
    assert doc["steps"][0]["status"] == "failed"
    assert doc["steps"][0]["detail"] == "RuntimeError: boom"
    assert doc["verdict"] == "fail"
    assert validate(doc) == []


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


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        Run.start("x", "chaos", {})
