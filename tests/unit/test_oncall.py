"""faultbook notebook: incident folders, the launcher, JupyterLab served for real (loopback)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from faultbook import cli
from faultbook.archive import audit
from faultbook.errors import IncidentError, ParameterError
from faultbook.oncall import incident, jupyter
from faultbook.paths import RUNBOOKS_DIR
from faultbook.results import Run


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "user:oncall")
    return h


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli.main, list(args))
    return res.exit_code, res.output


def one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("faultbook: error: ") and "Traceback" not in out
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_parameters_are_refused_like_run_and_nothing_is_created(home: Path) -> None:
    code, out = invoke("notebook", "health-check", "-p", "nope", "1", "--no-serve")
    assert code == 2
    assert "unknown parameter 'nope' for health-check; its parameters are: " in one_error_line(out)
    code, out = invoke("notebook", "health-check", "-p", "timeout_s", "soon", "--no-serve")
    assert code == 2
    assert "parameter 'timeout_s' expects float, got 'soon'" in one_error_line(out)
    code, out = invoke("notebook", "no-such-runbook", "--no-serve")
    assert code == 2
    assert "unknown runbook 'no-such-runbook'" in one_error_line(out)
    assert not (home / "incidents").exists()


def test_the_launcher_wants_exactly_one_action(home: Path) -> None:
    for args in ((), ("--list", "--close", "x"), ("health-check", "--list")):
        code, out = invoke("notebook", *args)
        assert code == 2
        assert "give one of RUNBOOK, --open DIR, --close DIR or --list" in one_error_line(out)
    code, out = invoke("notebook", "--list", "-p", "a", "b")
    assert code == 2 and "-p sets a parameter" in one_error_line(out)


def test_prepare_copies_the_runbook_with_its_parameters_into_a_new_incident(home: Path) -> None:
    original = RUNBOOKS_DIR / "web-node-failure.ipynb"
    before = digest(original)
    code, out = invoke(
        "notebook", "web-node-failure", "-p", "target", "web2", "-p", "confirm", "yes", "--no-serve"
    )
    assert code == 0, out
    (inc,) = incident.open_incidents()
    assert inc.path.parent == home / "incidents"
    assert inc.name.endswith("-web-node-failure") and inc.runbook == "web-node-failure"
    assert f"incident folder: {inc.path}" in out
    assert f"faultbook notebook --close {inc.path}" in out
    nb = nbformat.read(inc.notebook, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    src = injected[0].source
    assert 'target = "web2"' in src and "confirm = True" in src
    assert f'result_dir = "{inc.path}"' in src
    assert nb.metadata.kernelspec["name"] == jupyter.KERNEL["name"]
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    meta = json.loads((inc.path / "incident.json").read_text())
    assert meta["runbook"] == "web-node-failure" and meta["trigger"] == "user:oncall"
    assert meta["parameters"] == {"target": "web2", "confirm": True}
    assert inc.parameters() == {"target": "web2", "confirm": True}
    assert digest(original) == before  # the checkout's notebook is never written


def test_list_and_close_file_the_incident_into_the_archive(home: Path) -> None:
    inc = incident.prepare("health-check", {"timeout_s": "3"})
    code, out = invoke("notebook", "--list")
    assert code == 0 and inc.name in out and "user:oncall" in out and "none yet" in out
    # the runbook's last cell writes result.json into result_dir, the incident folder
    run = Run.start("health-check", "incident", {"timeout_s": 3.0})
    run.finish()
    run.save(inc.path)
    (inc.path / incident.CHECKPOINTS).mkdir()
    (inc.path / incident.CHECKPOINTS / "health-check-checkpoint.ipynb").write_text("{}")
    code, out = invoke("notebook", "--close", str(inc.path))
    assert code == 0, out
    assert "verdict pass" in out
    (archived,) = (home / "runs").iterdir()
    assert archived.name.startswith(inc.name.split("-")[0])
    names = {p.name for p in archived.iterdir()}
    assert names == {
        "health-check.ipynb",
        "health-check.html",
        "result.json",
        "incident.json",
        "archive.json",
    }
    assert json.loads((archived / "result.json").read_text())["mode"] == "incident"
    assert json.loads((archived / "archive.json").read_text())["trigger"] == "user:oncall"
    (entry,) = [e for e in audit.entries(home) if e["kind"] == "run"]
    assert entry["runbook"] == "health-check" and entry["parameters"] == {"timeout_s": 3.0}
    assert audit.verify(home).ok
    closed = json.loads((inc.path / "closed.json").read_text())
    assert closed["archived"] == str(archived)
    code, out = invoke("notebook", "--list")
    assert inc.name not in out and "no open incidents" in out
    code, out = invoke("notebook", "--close", inc.name)  # by name, under incidents/
    assert code == 2 and "is already closed" in one_error_line(out)


def test_closing_before_the_last_cell_records_a_failed_incident(home: Path) -> None:
    inc = incident.prepare("health-check", {})
    archived = incident.close(inc)
    doc = json.loads((archived / "result.json").read_text())
    assert doc["mode"] == "incident" and doc["verdict"] == "fail"
    assert doc["steps"][-1]["name"] == "notebook"
    assert "closed before the runbook wrote result.json" in doc["steps"][-1]["detail"]


def test_close_reverts_journaled_faults_first(home: Path) -> None:
    inc = incident.prepare("health-check", {})
    (inc.path / "faults.jsonl").write_text("")
    seen: list[Path] = []
    rb = {"faults": [], "steady_state": {"ok": True, "detail": "steady"}}
    archived = incident.close(inc, revert=lambda d: seen.append(d) or rb)
    assert seen == [inc.path]
    doc = json.loads((archived / "result.json").read_text())
    assert doc["rollback"] == rb


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("/nonexistent/20261127T030002Z-db-failover", "no such folder or notebook"),
        (str(RUNBOOKS_DIR / "db-failover.ipynb"), "the checkout's runbook, which is never edited"),
    ],
)
def test_bad_incident_dirs_are_one_line(home: Path, arg: str, expected: str) -> None:
    code, out = invoke("notebook", "--close", arg)
    assert code == 2
    assert expected in one_error_line(out)


def test_a_folder_that_is_not_an_incident(home: Path, tmp_path: Path) -> None:
    odd = tmp_path / "notes"
    odd.mkdir()
    with pytest.raises(IncidentError, match="not an incident folder"):
        incident.resolve(odd)
    named = tmp_path / "20261127T030002Z-db-failover"
    named.mkdir()
    with pytest.raises(IncidentError, match="no db-failover.ipynb"):
        incident.resolve(named)


def test_a_notebook_the_receiver_prepared_opens_and_closes_the_same_way(home: Path) -> None:
    from faultbook.alerts import dispatch

    context = {
        "alertname": "PostgresPrimaryDown",
        "fingerprint": "abc123",
        "runbook": "db-failover",
    }
    d = dispatch.prepare_notebook("db-failover", {"confirm": False}, context)
    code, out = invoke("notebook", "--list")
    assert d.name in out and "alert PostgresPrimaryDown" in out
    code, out = invoke("notebook", str(d / "db-failover.ipynb"), "--no-serve")  # a path opens
    assert code == 0, out
    assert f"faultbook notebook --open {d}" in out
    nb = nbformat.read(d / "db-failover.ipynb", as_version=4)
    assert nb.metadata.kernelspec["name"] == "faultbook"
    code, out = invoke("notebook", "--open", str(d), "-p", "confirm", "true")
    assert code == 2 and "has its parameters already" in one_error_line(out)
    archived = incident.close(incident.resolve(d))
    assert json.loads((archived / "archive.json").read_text())["trigger"] == "alert:abc123"
    assert (archived / "alert.json").exists()


def test_the_kernelspec_is_this_venv_python_under_faultbook_home(home: Path) -> None:
    path = jupyter.install_kernel(home)
    assert path == home / "jupyter" / "data" / "kernels" / "faultbook" / "kernel.json"
    spec = json.loads(path.read_text())
    assert spec["argv"][:3] == [sys.executable, "-m", "ipykernel_launcher"]
    env = jupyter.environment(home / "incidents" / "x", "t0k", home)
    for var in ("JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        assert env[var].startswith(str(home / "jupyter"))
    assert env["FAULTBOOK_RUN_DIR"] == str(home / "incidents" / "x")
    argv = jupyter.command(home, "db-failover.ipynb", 9999)
    for flag in ("--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1"):
        assert flag in argv
    assert not any("t0k" in a for a in argv)  # the token is not on the command line


def test_port_checks_and_the_tunnel_command() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        with pytest.raises(ParameterError, match=f"--port {busy}: cannot listen"):
            jupyter.check_port(busy)
    with pytest.raises(ParameterError, match="--port must be 1..65535"):
        jupyter.check_port(70000)
    assert jupyter.check_port(0) > 0
    assert jupyter.tunnel(8888, "ops", "ctl1") == "ssh -L 8888:127.0.0.1:8888 ops@ctl1"


def _get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_faultbook_notebook_serves_jupyterlab_for_real(home: Path) -> None:
    """The command as a person runs it: prepared, served on a free loopback port, answering
    /api/status with the token (and not without), the faultbook kernel the default;
    SIGTERM stops the server and its children."""
    inc = incident.prepare("health-check", {})
    env = {**os.environ, "FAULTBOOK_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "faultbook.cli", "notebook", "--open", str(inc.path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
        reader.daemon = True
        reader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("ssh -L" in x for x in lines):
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.1)
        out = "".join(lines)
        url = next(x.split(" ", 1)[1].strip() for x in lines if x.startswith("JupyterLab: "))
        base, token = url.split("/lab/tree/")[0], url.rsplit("token=", 1)[1]
        port = int(base.rsplit(":", 1)[1])
        assert base.startswith("http://127.0.0.1:") and "health-check.ipynb" in url, out
        assert f"ssh -L {port}:127.0.0.1:{port} " in out
        assert _get(f"{base}/api/status?token={token}") == 200
        assert _get(f"{base}/api/status") in (401, 403)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"{base}/api/kernelspecs?token={token}", timeout=2) as r:
            assert json.load(r)["default"] == "faultbook"
        assert jupyter.serving(inc.path, home) is not None
        code, msg = invoke("notebook", "--close", str(inc.path))
        assert code == 2 and "is still served by JupyterLab" in one_error_line(msg)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # The port is free again: the server is gone. SO_REUSEADDR lets the bind past the
    # TIME_WAIT of the test's own HTTP connections, never past a listening socket.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
