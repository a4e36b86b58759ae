"""Closing an incident from the notebook's last cell: the close request the kernel writes,
the server's post-save hook, and both for real with JupyterLab on a loopback port."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner

from faultbook import cli
from faultbook.archive import audit
from faultbook.errors import ArchiveError
from faultbook.oncall import incident, jupyter
from faultbook.results import Run

RUN_DIR = "FAULTBOOK_RUN_DIR"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "user:oncall")
    monkeypatch.delenv(RUN_DIR, raising=False)
    return h


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if `faultbook notebook` served every incident folder."""
    monkeypatch.setattr(jupyter, "serving", lambda folder, home=None: {"pid": 1, "port": 1})


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli.main, list(args))
    return res.exit_code, res.output


def last_cell(capsys: pytest.CaptureFixture[str]) -> str:
    """Run the runbook's last cell here; its first line of output (a served incident's
    cell then waits for the save: the line that ends it, one line too)."""
    incident.close_from_notebook()
    out = capsys.readouterr().out
    assert "Traceback" not in out, out
    lines = out.splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and "no save has filed" in lines[1]), out
    return lines[0]


def finished(inc: incident.Incident) -> None:
    """What the runbook's cells before the last one leave: result.json (mode incident)."""
    run = Run.start(inc.runbook, "incident", {})
    run.finish()
    run.save(inc.path)


def executed(inc: incident.Incident, *outputs: str) -> dict[str, Any]:
    """The incident's notebook as JupyterLab would save it, the last cell's OUTPUTS in it."""
    nb = nbformat.read(inc.notebook, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "from faultbook.oncall import incident\nincident.close_from_notebook()"
        )
    )
    nb.cells[-1].execution_count = len(nb.cells)
    nb.cells[-1].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=text + "\n") for text in outputs
    ]
    return dict(nb)


def save(inc: incident.Incident, *outputs: str) -> Path:
    nbformat.write(nbformat.from_dict(executed(inc, *outputs)), inc.notebook)
    return inc.notebook


def marker(inc: incident.Incident) -> str:
    return str(json.loads((inc.path / incident.CLOSE_REQUEST).read_text())["marker"])


# -- the last cell: the close request --------------------------------------------------


def test_outside_an_incident_the_last_cell_says_so_and_does_nothing(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # nbval in CI: no run directory
    assert "no incident to close here (FAULTBOOK_RUN_DIR is unset" in last_cell(capsys)
    # papermill under `faultbook run`: the run's --out, even one named like an incident
    out = tmp_path / "20261127T030002Z-health-check"
    out.mkdir()
    (out / "health-check.ipynb").write_text("{}")
    monkeypatch.setenv(RUN_DIR, str(out))
    line = last_cell(capsys)
    assert line.startswith("faultbook: nothing to close: ") and "not an incident folder" in line
    assert sorted(p.name for p in out.iterdir()) == ["health-check.ipynb"]
    monkeypatch.setenv(RUN_DIR, str(tmp_path / "missing"))
    assert "not an incident folder" in last_cell(capsys)


def test_an_incident_no_server_of_ours_serves_is_not_asked_to_close(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inc = incident.prepare("health-check", {})
    monkeypatch.setenv(RUN_DIR, str(inc.path))
    line = last_cell(capsys)
    assert "is not served by `faultbook notebook`, so no save will file it" in line
    assert f"faultbook notebook --close {inc.path}" in line
    assert not (inc.path / incident.CLOSE_REQUEST).exists()


def test_in_a_served_incident_the_last_cell_writes_a_close_request(
    home: Path, served: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inc = incident.prepare("health-check", {})
    monkeypatch.setenv(RUN_DIR, str(inc.path))
    monkeypatch.setattr(incident, "FILED_WAIT_S", 0.0)  # no save comes here
    line = last_cell(capsys)
    request = json.loads((inc.path / incident.CLOSE_REQUEST).read_text())
    assert request["notebook"] == "health-check.ipynb" and request["requested_at"]
    assert request["marker"].startswith(incident.MARKER + ":")
    assert f"[{request['marker']}]" in line
    assert f"Incident {inc.name} is filed into the archive at the next save" in line
    assert f"autosave within {jupyter.AUTOSAVE_S} s, or Ctrl-S now" in line
    assert inc.closed is None  # nothing is filed until the notebook is saved
    # run again: a new marker, so an earlier save cannot stand for this run of the cell
    last_cell(capsys)
    assert marker(inc) != request["marker"]


def test_the_last_cell_of_a_closed_incident(
    home: Path, served: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inc = incident.prepare("health-check", {})
    archived = incident.close(inc)
    monkeypatch.setenv(RUN_DIR, str(inc.path))
    line = last_cell(capsys)
    assert f"nothing to close: incident {inc.name} is already closed (archived as {archived})" in (
        line
    )
    # and an archived run (it has the incident's files) is no incident either
    monkeypatch.setenv(RUN_DIR, str(archived))
    assert "is an archived run, not an incident folder" in last_cell(capsys)
    assert not (archived / incident.CLOSE_REQUEST).exists()


def test_the_last_cell_runs_clean_under_papermill(home: Path, tmp_path: Path) -> None:
    """A runbook ending with the cell stays valid where `faultbook run` and nbval run it."""
    import papermill

    src, out = tmp_path / "last-cell.ipynb", tmp_path / "out.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from faultbook.oncall import incident\nincident.close_from_notebook()"
        )
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(out), progress_bar=False, kernel_name="python3")
    (cell,) = nbformat.read(out, as_version=4).cells
    (output,) = cell.outputs
    assert output.output_type == "stream" and "no incident to close here" in output.text


# -- the post-save hook's decisions ---------------------------------------------------


def test_the_hook_closes_only_a_saved_notebook_holding_the_request(
    home: Path, served: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    inc = incident.prepare("health-check", {})
    finished(inc)
    # saved before the last cell ran: no request
    archived, why = incident.close_on_save(save(inc, "step one"))
    assert archived is None and why == f"incident {inc.name}: no close request"
    line = incident.request_close(str(inc.path))
    # saved before the cell's output reached JupyterLab: no marker in the outputs
    archived, why = incident.close_on_save(save(inc, "step one"))
    assert archived is None and "does not hold the close request's output yet" in why
    # another notebook of the folder is not the incident's
    other = inc.path / "scratch.ipynb"
    other.write_text(inc.notebook.read_text())
    archived, why = incident.close_on_save(other)
    assert archived is None and "scratch.ipynb is not the notebook of incident" in why
    # a save from an earlier run of the cell does not count either
    incident.request_close(str(inc.path))
    archived, why = incident.close_on_save(save(inc, line))
    assert archived is None and "does not hold the close request's output yet" in why
    other.unlink()
    # the executed last cell is on disk: filed
    now = incident.request_close(str(inc.path))
    archived, why = incident.close_on_save(save(inc, "step one", now))
    assert archived is not None and archived.parent == home / "runs"
    assert why == f"closed incident {inc.name} from its notebook: archived as {archived}"
    names = {p.name for p in archived.iterdir()}
    assert names == {
        "health-check.ipynb",
        "health-check.html",
        "result.json",
        "incident.json",
        "close-requested.json",
        "archive.json",
    }
    assert marker(inc) in (archived / "health-check.ipynb").read_text()
    assert json.loads((archived / "result.json").read_text())["mode"] == "incident"
    (entry,) = [e for e in audit.entries(home) if e["kind"] == "run"]
    assert entry["runbook"] == "health-check" and entry["verdict"] == "pass"
    assert audit.verify(home).ok
    closed = inc.closed
    assert closed is not None and closed["archived"] == str(archived)
    assert closed["how"] == f"notebook saved with {marker(inc)}"
    # later autosaves: nothing more
    archived, why = incident.close_on_save(save(inc, "step one", now, "more"))
    assert archived is None and "is already closed" in why
    assert len(list((home / "runs").iterdir())) == 1


class Manager:
    """What the hook uses of jupyter_server's contents manager: its logger."""

    log = logging.getLogger("test.contents")


def test_the_hook_logs_and_never_raises_into_the_server(
    home: Path, served: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inc = incident.prepare("health-check", {})
    caplog.set_level(logging.DEBUG, logger="test.contents")
    nb_model = {"type": "notebook", "path": inc.notebook.name}
    incident.post_save_hook(model={"type": "file"}, os_path=str(inc.path / "notes.txt"))
    incident.post_save_hook(model=nb_model, os_path=str(inc.notebook), contents_manager=Manager())
    assert "no close request" in caplog.text
    save(inc, incident.request_close(str(inc.path)))
    real = incident.store.archive

    def broken(*_: object, **__: object) -> Path:
        raise ArchiveError("cannot archive the run into /x/runs: No space left on device")

    monkeypatch.setattr(incident.store, "archive", broken)
    caplog.clear()
    incident.post_save_hook(model=nb_model, os_path=str(inc.notebook), contents_manager=Manager())
    assert "faultbook: cannot archive the run into /x/runs: No space left" in caplog.text
    assert inc.closed is None  # a later save tries again

    def crash(*_: object, **__: object) -> Path:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(incident.store, "archive", crash)
    caplog.clear()
    incident.post_save_hook(model=nb_model, os_path=str(inc.notebook), contents_manager=Manager())
    assert "closing the incident of" in caplog.text and "RuntimeError: unexpected" in caplog.text
    monkeypatch.setattr(incident.store, "archive", real)
    caplog.clear()
    incident.post_save_hook(model=nb_model, os_path=str(inc.notebook), contents_manager=Manager())
    assert f"closed incident {inc.name} from its notebook" in caplog.text
    assert inc.closed is not None


def test_close_after_the_notebook_closed_it_says_already_closed(home: Path, served: None) -> None:
    inc = incident.prepare("health-check", {})
    incident.close_on_save(save(inc, incident.request_close(str(inc.path))))
    code, out = invoke("notebook", "--close", str(inc.path))  # still "served": closed wins
    lines = [x for x in out.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "is already closed" in lines[0], out
    code, out = invoke("notebook", "--list")
    assert inc.name not in out


def test_incident_servers_have_the_hook_and_a_short_autosave(home: Path) -> None:
    argv = jupyter.command(home, "health-check.ipynb", 9999)
    assert f"--FileContentsManager.post_save_hook={jupyter.SAVE_HOOK}" in argv
    path = jupyter.lab_settings(home)
    assert path.is_relative_to(home / "jupyter" / "config")
    doc = json.loads(path.read_text())
    assert doc[jupyter.DOCMANAGER] == {"autosave": True, "autosaveInterval": jupyter.AUTOSAVE_S}


# -- for real: JupyterLab on a loopback port ------------------------------------------


def _call(
    url: str, token: str, body: dict[str, Any] | None = None, method: str = "PUT"
) -> tuple[int, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    assert url.startswith(f"http://{jupyter.HOST}:")
    req = urllib.request.Request(  # noqa: S310 - our own loopback server, checked above
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method if body is not None else "GET",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with opener.open(req, timeout=30) as r:
            return int(r.status), json.load(r)
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode(errors="replace")


LAST_CELL = "from faultbook.oncall import incident\nincident.close_from_notebook()"


def _execute(base: str, token: str, code: str) -> str:
    """CODE run in a new kernel of the server at BASE, over its websocket as JupyterLab
    does; what it printed (and any traceback)."""
    import asyncio
    import uuid

    from tornado.websocket import websocket_connect

    status, kernel = _call(f"{base}/api/kernels", token, {"name": "faultbook"}, "POST")
    assert status == 201, kernel
    ws_url = base.replace("http://", "ws://") + f"/api/kernels/{kernel['id']}/channels"
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "execute_request",
            "username": "test",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }

    async def run() -> str:
        ws = await websocket_connect(f"{ws_url}?token={token}")
        await ws.write_message(json.dumps(request))
        out: list[str] = []
        while True:
            raw = await asyncio.wait_for(ws.read_message(), 120)
            assert raw is not None, "the kernel's websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "error":
                out.append("\n".join(content["traceback"]))
            elif kind == "status" and content["execution_state"] == "idle":
                ws.close()
                return "".join(out)

    return asyncio.run(run())


def test_a_save_through_jupyterlab_files_the_incident_for_real(home: Path) -> None:
    """JupyterLab started by oncall.jupyter.start; the last cell run in its kernel; the
    notebook saved through its REST contents API, as JupyterLab's autosave does: the save
    holding the last cell's output files the incident, later saves still work and file
    nothing more."""
    inc = incident.prepare("health-check", {}, kernel=jupyter.KERNEL)
    finished(inc)
    server = jupyter.start(inc.path, inc.notebook.name, jupyter.free_port(), home=home)
    try:
        server.wait_ready(60)
        base = f"http://{jupyter.HOST}:{server.port}"
        contents = f"{base}/api/contents/{inc.notebook.name}"
        # the server gives JupyterLab the short autosave as the setting's default
        code, doc = _call(f"{base}/lab/api/settings/{jupyter.DOCMANAGER}", server.token)
        assert code == 200, doc
        props = doc["schema"]["properties"]
        assert props["autosaveInterval"]["default"] == jupyter.AUTOSAVE_S
        assert props["autosave"]["default"] is True
        # the last cell runs in a kernel of this server (its environment, its checks);
        # it keeps running, adding a line per autosave interval, until a save files it
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            cell = pool.submit(_execute, base, server.token, LAST_CELL)
            deadline = time.monotonic() + 30
            while not (inc.path / incident.CLOSE_REQUEST).exists():
                assert time.monotonic() < deadline and not cell.done(), "no close request"
                time.sleep(0.2)
            want = f"[{marker(inc)}]"
            # an autosave before the cell's output arrived: nothing filed
            body = {"type": "notebook", "content": executed(inc)}
            code, doc = _call(contents, server.token, body)
            assert code == 200, doc
            assert inc.closed is None and not (home / "runs").exists()
            assert not cell.done()  # the cell waits on
            # the save holding the output files it, and the cell then says where
            line = (
                f"Incident {inc.name} is filed into the archive at the next save of this "
                f"notebook (autosave within {jupyter.AUTOSAVE_S} s, or Ctrl-S now). {want}"
            )
            body = {"type": "notebook", "content": executed(inc, "step one", line)}
            code, doc = _call(contents, server.token, body)
            assert code == 200, doc
            out = cell.result(timeout=60)
        lines = out.splitlines()
        assert lines[0] == line, out
        closed = inc.closed
        assert closed is not None, server.log.read_text()[-2000:]
        assert lines[-1] == f"faultbook: incident filed: {closed['archived']}", out
        archived = Path(closed["archived"])
        assert archived.parent == home / "runs"
        assert {"health-check.ipynb", "health-check.html", "result.json"} <= {
            p.name for p in archived.iterdir()
        }
        assert line in (archived / "health-check.ipynb").read_text()
        assert "step one" in (archived / "health-check.html").read_text()
        assert json.loads((archived / "result.json").read_text())["mode"] == "incident"
        assert audit.verify(home).ok
        log = server.log.read_text()
        assert f"faultbook: closed incident {inc.name} from its notebook" in log
        # further autosaves: saved, nothing archived twice
        body = {"type": "notebook", "content": executed(inc, "step one", line, "after")}
        code, doc = _call(contents, server.token, body)
        assert code == 200, doc
        assert "after" in inc.notebook.read_text()
        assert [p.name for p in (home / "runs").iterdir()] == [archived.name]
        assert len([e for e in audit.entries(home) if e["kind"] == "run"]) == 1
        code, out = invoke("notebook", "--close", str(inc.path))
        assert code == 2 and "is already closed" in out
        code, out = invoke("notebook", "--list")
        assert inc.name not in out
    finally:
        server.stop()
    assert audit.verify(home).ok


def test_faultbook_notebook_says_when_the_notebook_filed_it(
    home: Path, served: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The terminal of `faultbook notebook` says so once; the server goes on until Ctrl-C
    (here: the stand-in process ends by itself)."""
    import subprocess
    import sys
    import threading

    from faultbook.cli import oncall as cli_oncall

    inc = incident.prepare("health-check", {})
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(4)"])
    server = jupyter.Server(proc, 1, "t", inc.path, inc.notebook.name, home / "log")
    saved = threading.Timer(
        0.5, lambda: incident.close_on_save(save(inc, incident.request_close(str(inc.path))))
    )
    saved.start()
    try:
        cli_oncall._wait(server, inc)
    finally:
        saved.join()
        server.stop()
    out = capsys.readouterr().out
    closed = inc.closed
    assert closed is not None
    assert out.splitlines() == [
        f"closed from the notebook: archived as {closed['archived']}",
        "JupyterLab goes on serving the folder until Ctrl-C",
    ]


class FakeTime:
    """A clock and a sleep that advance together; at FILED_AT the incident is filed."""

    def __init__(self, folder: Path, filed_at: float | None) -> None:
        self.now, self.folder, self.filed_at = 0.0, folder, filed_at

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s
        if self.filed_at is not None and self.now >= self.filed_at:
            (self.folder / incident.CLOSED).write_text(json.dumps({"archived": "/a/run"}))


def test_the_last_cell_re_dirties_the_notebook_until_a_save_files_it(tmp_path: Path) -> None:
    """A save can miss the marker's output and leave the model clean: the cell adds a
    line after each autosave interval until closed.json appears, then says where."""
    t = FakeTime(tmp_path, filed_at=15.0)
    said: list[str] = []
    filed = incident.wait_filed(tmp_path, 60, say=said.append, sleep=t.sleep, clock=t.clock)
    assert filed
    nudges = [s for s in said if "waiting for a save" in s]
    assert len(nudges) == 15 // (jupyter.AUTOSAVE_S + 1)
    assert said[-1] == "faultbook: incident filed: /a/run"


def test_the_last_cell_stops_waiting_and_says_how_to_file(tmp_path: Path) -> None:
    t = FakeTime(tmp_path, filed_at=None)
    said: list[str] = []
    filed = incident.wait_filed(tmp_path, 20, say=said.append, sleep=t.sleep, clock=t.clock)
    assert not filed and t.now == pytest.approx(20.0)
    assert said[-1] == (
        "faultbook: no save has filed the incident in 20 s: press Ctrl-S, "
        f"or run: faultbook notebook --close {tmp_path}"
    )
