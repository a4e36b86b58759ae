from __future__ import annotations

from pathlib import Path

import pytest

from faultbook.errors import ParameterError, RunbookNotFound, UsageError
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


@pytest.mark.parametrize(
    "raw", ["nan", "NaN", "inf", "-inf", "Infinity", float("nan"), float("inf")]
)
def test_float_parameters_refuse_nan_and_inf(raw: object) -> None:
    with pytest.raises(ParameterError, match="parameter 'timeout_s' expects a finite number"):
        runner.coerce(runner.Param("timeout_s", "float", "", ""), raw)


def test_nan_inside_a_list_or_dict_is_refused() -> None:
    with pytest.raises(ParameterError, match="'p' expects a finite number"):
        runner.coerce(runner.Param("p", "list", "", ""), "[1, .nan]")
    with pytest.raises(ParameterError, match="'p' expects a finite number"):
        runner.coerce(runner.Param("p", "dict", "", ""), "{rto_s: .inf}")


def test_validate_names_the_nan_parameter() -> None:
    with pytest.raises(ParameterError, match="'timeout_s'.*nan"):
        runner.validate("health-check", {"timeout_s": "nan"})


def test_cli_refuses_nan_with_exit_2() -> None:
    from click.testing import CliRunner

    from faultbook import cli

    res = CliRunner().invoke(cli.main, ["run", "health-check", "-p", "timeout_s", "inf"])
    assert res.exit_code == 2
    assert "'timeout_s' expects a finite number" in res.output


@pytest.mark.parametrize("bad", ["/proc/faultbook-report", "FILE/sub"])
def test_out_dir_that_cannot_be_created_exits_2_in_one_line(tmp_path: Path, bad: str) -> None:
    from click.testing import CliRunner

    from faultbook import cli

    (tmp_path / "FILE").write_text("not a directory")
    target = bad.replace("FILE", str(tmp_path / "FILE"))
    res = CliRunner().invoke(cli.main, ["run", "health-check", "--out", target])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("faultbook: error: --out ")
    assert "cannot create the report directory" in lines[0]
    assert "Traceback" not in res.output


def test_prepare_out_dir_creates_and_checks(tmp_path: Path) -> None:
    assert runner.prepare_out_dir(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    with pytest.raises(UsageError) as exc:
        runner.prepare_out_dir("/proc/nope")
    assert exc.value.exit_code == 2


def test_cell_label_names_the_step_or_the_first_line() -> None:
    assert runner.cell_label('with p.run.step("detect") as st:\n    x()') == "detect"
    assert runner.cell_label("with p.run.step(f'rejoin {old}'):\n") == "rejoin {old}"
    assert runner.cell_label("# comment\n\npost = p.wait_steady()\n") == "post = p.wait_steady()"
    assert runner.cell_label("") == "(empty)"


def test_progress_prints_a_line_per_code_cell() -> None:
    import io

    out = io.StringIO()
    prog = runner._Progress("db-failover", out)
    prog.bind([{"cell_type": "markdown"}, {"cell_type": "code"}, {"cell_type": "code"}])
    prog.cell(0, "# a heading")  # markdown: no line
    prog.cell(1, 'with p.run.step("detect"):')
    prog.cell(2, "p.check()")
    got = out.getvalue().splitlines()
    assert len(got) == 2
    assert got[0].startswith("faultbook: db-failover: cell 1/2") and got[0].endswith("detect")
    assert got[1].endswith("p.check()")


@pytest.mark.parametrize("bad", ["nan", "inf", "0", "-5"])
def test_cell_timeout_must_be_positive_and_finite(bad: str) -> None:
    from click.testing import CliRunner

    from faultbook import cli

    res = CliRunner().invoke(cli.main, ["run", "health-check", "--cell-timeout", bad])
    assert res.exit_code == 2
    assert "--cell-timeout must be a number of seconds > 0" in res.output
