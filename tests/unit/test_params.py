from __future__ import annotations

import pytest

from faultbook.errors import ParameterError, RunbookNotFound
from faultbook.report import runner


def test_health_check_declares_typed_parameters() -> None:
    params = runner.parameters("health-check")
    assert params["inventory"].type == "str"
    assert params["timeout_s"].type == "float"
    assert "seconds" in params["timeout_s"].help


def test_cli_strings_are_coerced_to_the_declared_type() -> None:
    assert runner.validate("health-check", {"timeout_s": "2.5", "inventory": "example"}) == {
        "timeout_s": 2.5,
        "inventory": "example",
    }


def test_unknown_parameter_is_named_with_the_known_ones() -> None:
    with pytest.raises(ParameterError, match="unknown parameter 'timeout'.*timeout_s \\(float\\)"):
        runner.validate("health-check", {"timeout": "3"})


def test_runner_owned_parameters_cannot_be_set() -> None:
    with pytest.raises(ParameterError, match="unknown parameter 'result_dir'"):
        runner.validate("health-check", {"result_dir": "/tmp"})


def test_wrong_type_names_parameter_and_expectation() -> None:
    with pytest.raises(ParameterError, match="parameter 'timeout_s' expects float, got 'soon'"):
        runner.validate("health-check", {"timeout_s": "soon"})


def test_mode_must_be_drill_or_incident() -> None:
    with pytest.raises(ParameterError, match="'mode' expects one of drill, incident"):
        runner.validate("health-check", {"mode": "panic"})


@pytest.mark.parametrize(
    "ptype, raw, expected",
    [
        ("int", "3", 3),
        ("bool", "true", True),
        ("bool", "No", False),
        ("list", "[a, b]", ["a", "b"]),
        ("dict", "{rto_s: 10}", {"rto_s": 10}),
        ("float", 3, 3.0),
    ],
)
def test_coerce(ptype: str, raw: object, expected: object) -> None:
    assert runner.coerce(runner.Param("p", ptype, "", ""), raw) == expected


@pytest.mark.parametrize(
    "ptype, raw",
    [("int", "1.5"), ("bool", "maybe"), ("list", "{a: 1}"), ("int", True), ("bool", 1)],
)
def test_coerce_rejects(ptype: str, raw: object) -> None:
    with pytest.raises(ParameterError, match=f"expects {ptype}"):
        runner.coerce(runner.Param("p", ptype, "", ""), raw)


def test_unknown_runbook_lists_the_runbooks() -> None:
    with pytest.raises(RunbookNotFound, match="unknown runbook 'helth'; available: .*health-check"):
        runner.runbook_path("helth")
