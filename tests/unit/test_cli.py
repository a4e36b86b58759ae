from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from defusedxml import ElementTree as SafeET
from fakeruns import fake_result

from faultbook import cli
from faultbook.lab import lab as lab_mod


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli.main, list(args))
    return res.exit_code, res.output


def test_help_lists_the_commands() -> None:
    code, out = invoke("--help")
    assert code == 0
    for word in ("lab", "run", "runbooks"):
        assert word in out
    code, out = invoke("lab", "--help")
    for word in ("up", "down", "status", "ssh", "crash", "boot", "partition", "heal", "netem"):
        assert word in out


def test_unknown_runbook_exits_2_listing_runbooks() -> None:
    code, out = invoke("run", "nope")
    assert code == 2
    assert "unknown runbook 'nope'; available: " in out
    assert "db-failover" in out and "health-check" in out


def test_bad_parameter_exits_2_and_runs_nothing(tmp_path: object) -> None:
    code, out = invoke("run", "health-check", "-p", "timeout_s", "fast", "--out", f"{tmp_path}/r")
    assert code == 2
    assert "expects float" in out


def test_unknown_host_exits_2_listing_known_hosts() -> None:
    code, out = invoke("lab", "ssh", "db9", "true")
    assert code == 2
    assert "unknown host 'db9'" in out and "db1, db2, db3" in out


def test_not_root_is_a_one_line_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_mod.os, "geteuid", lambda: 1000)
    code, out = invoke("lab", "up")
    assert code == 2
    assert out.count("\n") == 1 and "needs root" in out


def test_missing_tool_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = lab_mod.shutil.which
    monkeypatch.setattr(
        lab_mod.shutil, "which", lambda t: None if t == "systemd-nspawn" else real(t)
    )
    code, out = invoke("lab", "crash", "db1")
    assert code == 2
    assert "systemd-nspawn is not installed; fix with: apt-get install systemd-container" in out


def test_bad_faultbook_home_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTBOOK_HOME", "not/absolute")
    code, out = invoke("lab", "status")
    assert code == 2
    assert "FAULTBOOK_HOME='not/absolute' is a relative path" in out


def test_netem_bad_values_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab_mod, "preflight", lambda: None)
    code, out = invoke("lab", "netem", "db1", "--loss", "150")
    assert code == 2 and "0 <= --loss <= 100" in out


def test_web_drain_of_a_non_web_host_is_a_usage_error() -> None:
    code, out = invoke("web", "drain", "db1")
    assert code == 2
    assert "db1 is not in group web" in out and "web1, web2, web3" in out


def test_db_fence_of_an_unknown_host_is_a_usage_error() -> None:
    code, out = invoke("db", "fence", "db9")
    assert code == 2
    assert "unknown host 'db9'" in out


# ------------------------------------------------------------- run --junit
class FakeRun:
    """report.runner.run's stand-in: writes a result.json as a runbook would."""

    def __init__(self, verdict: str = "pass") -> None:
        self.verdict = verdict
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, values: dict[str, Any], out: Path, **_kw: Any) -> Any:
        from faultbook.report.runner import RunOutcome
        from faultbook.results import Summary

        self.calls.append((name, values))
        fake_result(out, name, verdict=self.verdict, params=values)
        result = out / "result.json"
        return RunOutcome(
            out / f"{name}.ipynb", out / f"{name}.html", result, Summary.from_file(result)
        )


@pytest.fixture
def fake_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeRun:
    from faultbook.report import runner

    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path / "home"))
    fake = FakeRun()
    monkeypatch.setattr(runner, "run", fake)
    return fake


def _run(tmp_path: Path, *extra: str) -> Result:
    args = ["run", "db-failover", "-p", "mode", "drill", "-p", "fault", "host-crash"]
    return CliRunner().invoke(cli.main, [*args, "--out", str(tmp_path / "r"), *extra])


def test_run_junit_writes_one_case_with_the_metrics(tmp_path: Path, fake_run: FakeRun) -> None:
    xml = tmp_path / "ci" / "junit.xml"  # its directory is made
    r = _run(tmp_path, "--junit", str(xml))
    assert r.exit_code == 0, r.output
    assert f"junit: {xml.resolve()}" in r.output
    root = SafeET.parse(xml).getroot()
    assert root.get("tests") == "1" and root.get("failures") == "0"
    (case,) = root.iter("testcase")
    assert case.get("name") == "db-failover/host-crash"
    assert case.get("classname") == "faultbook.db-failover"
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["rto_s"] == "4.25" and props["lost_writes"] == "0"
    assert props["fault"] == "host-crash" and props["mode"] == "drill"
    assert case.find("failure") is None


def test_run_junit_has_the_failed_steps_of_a_failed_run(tmp_path: Path, fake_run: FakeRun) -> None:
    fake_run.verdict = "fail"
    xml = tmp_path / "junit.xml"
    r = _run(tmp_path, "--junit", str(xml))
    assert r.exit_code == 1 and "verdict: FAIL" in r.output
    root = SafeET.parse(xml).getroot()
    assert root.get("failures") == "1"
    failure = root.find(".//testcase/failure")
    assert failure is not None and failure.get("type") == "verdict"
    assert failure.get("message") == "verify: lost writes: 2"


@pytest.mark.parametrize("where", ["a-file/junit.xml", "a-dir"])
def test_run_refuses_a_bad_junit_path_before_running(
    tmp_path: Path, fake_run: FakeRun, where: str
) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-dir").mkdir()
    r = _run(tmp_path, "--junit", str(tmp_path / where))
    assert r.exit_code == 2
    assert fake_run.calls == [] and not (tmp_path / "r").exists()  # nothing ran, nor made
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert r.output.startswith(f"faultbook: error: --junit '{tmp_path / where}': cannot write it")


def test_run_says_so_when_the_junit_file_cannot_be_written_after_the_run(
    tmp_path: Path, fake_run: FakeRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faultbook.errors import ResultError
    from faultbook.suites import junit

    def full(*_a: Any, **_kw: Any) -> Path:
        raise ResultError("--junit 'x': cannot write it: No space left on device")

    monkeypatch.setattr(junit, "write", full)
    r = _run(tmp_path, "--junit", str(tmp_path / "junit.xml"))
    assert r.exit_code == 1 and len(fake_run.calls) == 1
    assert "verdict: PASS" in r.output and "result: " in r.output
    assert "faultbook: the JUnit XML is not written: --junit 'x': cannot write it" in r.output


def test_suite_run_and_history_refuse_a_bad_junit_path_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from faultbook.cli import main
    from faultbook.suites import execute, history

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("ran although --junit was bad")

    monkeypatch.setattr(execute, "run_suite", boom)
    monkeypatch.setattr(history, "build", boom)
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path))
    for args in (["suite", "run", "smoke"], ["history", "--out", str(tmp_path / "h")]):
        r = CliRunner().invoke(main, [*args, "--junit", str(tmp_path)])
        assert r.exit_code == 2, r.output
        assert "junit" in r.output.lower() and "Traceback" not in r.output
