from __future__ import annotations

import pytest
from click.testing import CliRunner

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
