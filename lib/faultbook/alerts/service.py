"""The receiver as a service on a controller: start, stop, status, and a systemd unit.

The controller may have no systemd (this one has none), so ``start`` runs
``faultbook alerts serve`` detached in a new session, its output appended to
state_dir(inv)/alerts/receiver.log; ``serve`` writes receiver.pid and receiver.json
(pid, since, listen address, routes) once it listens. ``start`` returns when
``GET /-/healthy`` answers (bounded, ``faultbook.poll``), or raises ``ReceiverError``
with the log's last line. ``stop`` sends SIGTERM and, after a bound, SIGKILL. Runs in
flight are their own sessions and go on. On a controller with systemd,
``install_unit`` writes a unit file instead; it never calls systemctl.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from faultbook import decisions, poll
from faultbook.alerts import routes
from faultbook.alerts.server import Files, listen_address, parse_listen, token
from faultbook.errors import FaultbookError, ReceiverError
from faultbook.inventory import Inventory
from faultbook.paths import faultbook_home

DEFAULT_UNIT = Path("/etc/systemd/system/faultbook-alerts.service")
UNIT_NAME = "faultbook-alerts.service"


def _pid(files: Files) -> int | None:
    try:
        return int(files.pid.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """A live (not zombie) process whose command line is ``faultbook … alerts serve``."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    return b"alerts" in argv and b"serve" in argv


def _state(files: Files) -> dict[str, Any]:
    try:
        doc = json.loads(files.state.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def last_log_line(files: Files) -> str:
    try:
        lines = [ln for ln in files.log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


def _probe_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104


def healthy(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether ``GET /-/healthy`` answers 200 (no proxy from the environment)."""
    import requests

    from faultbook.stack.http import session

    h = _probe_host(host)
    url = f"http://[{h}]:{port}/-/healthy" if ":" in h else f"http://{h}:{port}/-/healthy"
    try:
        return session().get(url, timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def status(inv: Inventory, last: int = 10) -> dict[str, Any]:
    """Up or down, pid, since when, the listen address, the log, the last decisions."""
    files = Files.of(inv)
    pid = _pid(files)
    up = pid is not None and _alive(pid)
    st = _state(files) if up else {}
    listen = st.get("listen")
    if listen is None:
        with contextlib.suppress(FaultbookError):
            h, p = listen_address(inv)
            listen = f"{h}:{p}"
    answering = False
    if up and listen:
        h, p = parse_listen(str(listen))
        answering = healthy(h, p)
    recent = [e for e in decisions.entries(event="decision") if e.get("inventory") == inv.name]
    return {
        "up": up,
        "healthy": answering,
        "pid": pid if up else None,
        "since": st.get("since"),
        "listen": listen,
        "inventory": str(inv.path),
        "routes": st.get("routes"),
        "log": str(files.log),
        "decisions": recent[-last:] if last > 0 else [],
    }


def start(
    inv: Inventory,
    routes_file: str | Path | None = None,
    listen: str | None = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Start ``faultbook alerts serve`` detached; return its status once it answers.

    Already running: its status, nothing started. The routes, the token and the listen
    address are checked here first, so their errors are one line and exit 2."""
    files = Files.of(inv)
    current = status(inv, last=0)
    if current["up"]:
        return current
    routes.load(inv, routes_file)
    token(inv)
    host, port = parse_listen(listen) if listen else listen_address(inv)
    argv = [
        sys.executable,
        "-m",
        "faultbook.cli",
        "alerts",
        "serve",
        "-i",
        str(inv.path),
        "--listen",
        f"{host}:{port}",
    ]
    if routes_file is not None:
        argv += ["--routes", str(Path(routes_file).resolve())]
    files.log.parent.mkdir(parents=True, exist_ok=True)
    with open(files.log, "ab") as out:
        out.write(f"--- {decisions.now_iso()} start: {shlex.join(argv)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "FAULTBOOK_HOME": str(faultbook_home())},
        )

    def up(_t: float) -> bool | None:
        code = proc.poll()
        if code is not None:
            raise ReceiverError(
                f"the alert receiver exited with status {code} at start: {last_log_line(files)} "
                f"(log: {files.log})"
            )
        return True if healthy(host, port, timeout_s=1.0) and _pid(files) == proc.pid else None

    try:
        poll.poll(
            up,
            timeout_s,
            what=f"the alert receiver answering on {host}:{port}",
            interval_s=0.2,
            seen=lambda: last_log_line(files),
            error=ReceiverError,
        )
    except ReceiverError:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        raise
    return status(inv, last=0)


def stop(inv: Inventory, timeout_s: float = 10.0) -> bool:
    """SIGTERM the receiver, SIGKILL after ``timeout_s``; False when it was not running."""
    files = Files.of(inv)
    pid = _pid(files)
    if pid is None or not _alive(pid):
        files.pid.unlink(missing_ok=True)
        files.state.unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not poll.until(lambda: not _alive(pid), timeout_s, interval_s=0.1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not poll.until(lambda: not _alive(pid), 5.0, interval_s=0.1):
            raise ReceiverError(f"the alert receiver (pid {pid}) survived SIGKILL")
    # A SIGKILLed receiver leaves its files behind: remove them either way.
    files.pid.unlink(missing_ok=True)
    files.state.unlink(missing_ok=True)
    return True


def unit_text(
    inv: Inventory, routes_file: str | Path | None = None, listen: str | None = None
) -> str:
    """The systemd unit that runs the receiver for INV (with this venv's faultbook)."""
    exe = Path(sys.executable).with_name("faultbook")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "faultbook.cli"]
    cmd += ["alerts", "serve", "-i", str(inv.path.resolve())]
    if routes_file is not None:
        cmd += ["--routes", str(Path(routes_file).resolve())]
    if listen is not None:
        cmd += ["--listen", listen]
    env = [f"FAULTBOOK_HOME={faultbook_home()}"]
    vault_pw = os.environ.get("FAULTBOOK_VAULT_PASSWORD_FILE")
    if vault_pw:
        env.append(f"FAULTBOOK_VAULT_PASSWORD_FILE={Path(vault_pw).resolve()}")
    lines = [
        "# Written by `faultbook alerts install-unit`; see docs/alerts.md.",
        "[Unit]",
        f"Description=faultbook alert receiver (inventory {inv.name})",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={' '.join(_quote(c) for c in cmd)}",
        *(f"Environment={_quote(e)}" for e in env),
        "Restart=on-failure",
        "RestartSec=2",
        "# Runs the receiver started go on when it stops or restarts (a failover",
        "# must not be cut in the middle); each records its own result.json.",
        "KillMode=process",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def install_unit(
    inv: Inventory,
    path: str | Path = DEFAULT_UNIT,
    routes_file: str | Path | None = None,
    listen: str | None = None,
) -> tuple[Path, list[str]]:
    """Write the unit file; return its path and the systemctl commands to run (not run)."""
    routes.load(inv, routes_file)  # a unit for a routing file that does not load is no use
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(unit_text(inv, routes_file, listen))
    except OSError as exc:
        raise ReceiverError(f"cannot write {p}: {exc.strerror or exc}") from None
    name = p.name if p.suffix == ".service" else UNIT_NAME
    return p, [
        "systemctl daemon-reload",
        f"systemctl enable --now {name}",
        f"systemctl status {name}",
    ]


def _quote(s: str) -> str:
    return f'"{s}"' if any(c in s for c in ' "\\') else s
