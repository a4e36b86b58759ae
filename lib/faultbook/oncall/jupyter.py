"""JupyterLab for one incident folder: loopback only, a token, root-safe, the project's kernel.

Everything Jupyter would write under the user's home goes under
``$FAULTBOOK_HOME/jupyter/`` instead (``JUPYTER_DATA_DIR``, ``JUPYTER_CONFIG_DIR``,
``JUPYTER_RUNTIME_DIR``, ``IPYTHONDIR``): the kernelspec ``faultbook`` (this venv's
python, ``-m ipykernel_launcher``), the server's runtime file, workspaces, IPython's
history. Nothing is installed into ``~/.local/share/jupyter`` or ``/usr/local/share``.

The server runs as a child process in its own session, with ``--allow-root`` (the lab
needs root), ``--no-browser``, ``127.0.0.1`` only, the token in ``JUPYTER_TOKEN`` (not on
the command line, where ``ps`` shows it), ``root_dir`` the incident folder and the
notebook as the start page. Its kernels inherit ``FAULTBOOK_RUN_DIR`` (the incident
folder: where a drill's fault journal goes) and ``FAULTBOOK_HOME``. Its log goes to
``$FAULTBOOK_HOME/jupyter/logs/<incident>.log``.

Closing from the notebook: the server's ``FileContentsManager.post_save_hook`` is
``oncall.incident.post_save_hook`` (on the command line, so only incident servers have
it), which files the incident when a save holds the output of the last cell's
``incident.close_from_notebook()``; and JupyterLab autosaves every ``AUTOSAVE_S`` seconds
(a default-settings override under ``$FAULTBOOK_HOME/jupyter/config/labconfig/``), so
running that cell is enough.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultbook.drills.procedure import RUN_DIR_ENV
from faultbook.errors import NotebookServerError, ParameterError
from faultbook.paths import faultbook_home

KERNEL = {"name": "faultbook", "display_name": "faultbook (Python 3)", "language": "python"}
HOST = "127.0.0.1"
DEFAULT_PORT = 8888
AUTOSAVE_S = 5  # JupyterLab's autosave interval on incident servers (its default: 120 s)
SAVE_HOOK = "faultbook.oncall.incident.post_save_hook"
DOCMANAGER = "@jupyterlab/docmanager-extension:plugin"


def jupyter_dir(home: Path | None = None) -> Path:
    return (home or faultbook_home(create=True)) / "jupyter"


def install_kernel(home: Path | None = None, python: str | None = None) -> Path:
    """The ``faultbook`` kernelspec under ``$FAULTBOOK_HOME/jupyter/data/kernels``: this
    interpreter (the venv's python) running ipykernel. Rewritten only when it changed."""
    d = jupyter_dir(home) / "data" / "kernels" / KERNEL["name"]
    spec = {
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": KERNEL["display_name"],
        "language": KERNEL["language"],
        "metadata": {"debugger": True},
    }
    path = d / "kernel.json"
    text = json.dumps(spec, indent=2) + "\n"
    if not path.exists() or path.read_text() != text:
        d.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


NOTIFICATIONS = "@jupyterlab/apputils-extension:notification"
NOTEBOOK = "@jupyterlab/notebook-extension:tracker"


def lab_settings(home: Path | None = None) -> Path:
    """JupyterLab's default settings for incident servers: autosave on, every AUTOSAVE_S
    seconds; no news, no update check. A ``default_setting_overrides`` file in the
    ``labconfig`` directory of ``$FAULTBOOK_HOME/jupyter/config`` (JUPYTER_CONFIG_DIR),
    which jupyterlab_server
    applies to the settings' defaults; a person's own settings still win. Rewritten only
    when it changed."""
    d = jupyter_dir(home) / "config" / "labconfig" / "default_setting_overrides.d"
    path = d / "faultbook.json"
    doc = {
        DOCMANAGER: {"autosave": True, "autosaveInterval": AUTOSAVE_S},
        # no news feed and no update check: nothing to ask the engineer about
        NOTIFICATIONS: {"fetchNews": "false", "checkForUpdates": False},
        # every cell in the page, rendered as it comes: a runbook is a few dozen cells,
        # and find (Ctrl-F) and the browser test see the whole notebook
        NOTEBOOK: {"windowingMode": "none"},
    }
    text = json.dumps(doc, indent=2) + "\n"
    if not path.exists() or path.read_text() != text:
        d.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def environment(folder: Path, token: str, home: Path | None = None) -> dict[str, str]:
    """The server's environment: this one, with Jupyter's directories under
    ``$FAULTBOOK_HOME/jupyter`` and the incident folder as the run directory."""
    j = jupyter_dir(home)
    env = dict(os.environ)
    env.update(
        {
            "JUPYTER_DATA_DIR": str(j / "data"),
            "JUPYTER_CONFIG_DIR": str(j / "config"),
            "JUPYTER_RUNTIME_DIR": str(j / "runtime"),
            "IPYTHONDIR": str(j / "ipython"),
            "JUPYTER_TOKEN": token,
            RUN_DIR_ENV: str(folder),
            "FAULTBOOK_HOME": str(home or faultbook_home()),
        }
    )
    env.pop("JUPYTER_PATH", None)  # our data dir first, then the venv's (sys.prefix)
    return env


def command(folder: Path, notebook: str, port: int) -> list[str]:
    """``python -m jupyterlab`` with the flags that make it safe and root-proof, and the
    post-save hook that closes the incident when its notebook asked for it."""
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        f"--ServerApp.ip={HOST}",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={folder}",
        f"--LabApp.default_url=/lab/tree/{notebook}",
        f"--MappingKernelManager.default_kernel_name={KERNEL['name']}",
        f"--FileContentsManager.post_save_hook={SAVE_HOOK}",
        # The controller may only talk to loopback and the lab: no news feed, no update
        # check (and no pop-up asking for either in the engineer's way).
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def check_port(port: int) -> int:
    """PORT if it can be served on 127.0.0.1 (0: a free one); ParameterError otherwise."""
    if port == 0:
        return free_port()
    if not 1 <= port <= 65535:
        raise ParameterError(f"--port must be 1..65535 (0: any free port), got {port}")
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise ParameterError(
                f"--port {port}: cannot listen on {HOST}:{port} ({exc.strerror}); "
                "pick another with --port, or --port 0 for any free one"
            ) from None
    return port


def tunnel(port: int, user: str | None = None, host: str | None = None) -> str:
    """The SSH command that brings the server to a laptop."""
    return f"ssh -L {port}:{HOST}:{port} {user or getpass.getuser()}@{host or socket.gethostname()}"


def _get(url: str, timeout_s: float) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy: loopback
    try:
        with opener.open(url, timeout=timeout_s) as r:  # our own http://127.0.0.1
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class Server:
    """A running JupyterLab; ``stop()`` ends it (and its kernels)."""

    process: subprocess.Popen[bytes]
    port: int
    token: str
    folder: Path
    notebook: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/lab/tree/{self.notebook}?token={self.token}"

    def status(self, timeout_s: float = 1.0) -> int | None:
        """HTTP status of ``/api/status`` (None: no answer)."""
        try:
            return _get(f"http://{HOST}:{self.port}/api/status?token={self.token}", timeout_s)
        except (OSError, ValueError):
            return None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until ``/api/status`` answers 200; NotebookServerError when the server exits or
        does not answer in TIMEOUT_S (the message points at its log)."""
        deadline = time.monotonic() + timeout_s
        last: int | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NotebookServerError(
                    f"JupyterLab exited with status {self.process.returncode} before it "
                    f"answered; its log: {self.log}{_tail(self.log)}"
                )
            last = self.status()
            if last == 200:
                return
            time.sleep(0.2)
        self.stop()
        raise NotebookServerError(
            f"JupyterLab did not answer {HOST}:{self.port}/api/status within {timeout_s:g} s "
            f"(last status: {last or 'no answer'}); its log: {self.log}"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM to the server's session (it shuts its kernels down), SIGKILL after
        TIMEOUT_S."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout_s)


def _tail(log: Path, n: int = 1) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return ": " + " | ".join(lines[-n:])
    return ""


def start(
    folder: Path,
    notebook: str,
    port: int = DEFAULT_PORT,
    *,
    token: str | None = None,
    home: Path | None = None,
) -> Server:
    """Start JupyterLab on FOLDER (not waiting for it: ``wait_ready``)."""
    home = home or faultbook_home(create=True)
    install_kernel(home)
    lab_settings(home)
    token = token or secrets.token_urlsafe(32)
    logs = jupyter_dir(home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{folder.name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command(folder, notebook, port),
            cwd=folder,
            env=environment(folder, token, home),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(proc, port, token, folder, notebook, log)


def serving(folder: Path, home: Path | None = None) -> dict[str, Any] | None:
    """A live JupyterLab of ours whose root is FOLDER (its runtime file), or None."""
    runtime = jupyter_dir(home) / "runtime"
    if not runtime.is_dir():
        return None
    for f in runtime.glob("jpserver-*.json"):
        try:
            info = json.loads(f.read_text())
            pid = int(info["pid"])
            os.kill(pid, 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if Path(str(info.get("root_dir", ""))).resolve() == folder.resolve():
            return dict(info)
    return None
