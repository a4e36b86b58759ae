"""A thin wrapper over ansible-runner: run a playbook, get a typed result back.

It keeps ansible-runner's private_data_dir layout (one per inventory under
``$FAULTBOOK_HOME/runner/<inventory>``), points Ansible at the inventory's
known_hosts and key (host key checking stays on), its vault, and the
repository's playbooks/ansible.cfg (forks, pipelining, ControlPersist,
explicit fact gathering).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faultbook import inventory as inventory_mod
from faultbook import secrets
from faultbook.errors import PlaybookFailed, UsageError
from faultbook.paths import PLAYBOOKS_DIR, faultbook_home, state_dir

log = logging.getLogger(__name__)

EventHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class PlaybookResult:
    playbook: str
    status: str
    rc: int
    stats: dict[str, HostStats]
    duration_s: float
    events: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def changed(self) -> int:
        return sum(s.changed for s in self.stats.values())

    @property
    def ok(self) -> bool:
        return self.status == "successful" and self.rc == 0

    def recap(self) -> str:
        lines = [f"{'HOST':<22} {'ok':>4} {'changed':>8} {'failed':>7} {'unreach':>8}"]
        for host, s in sorted(self.stats.items()):
            lines.append(f"{host:<22} {s.ok:>4} {s.changed:>8} {s.failed:>7} {s.unreachable:>8}")
        return "\n".join(lines)


def playbook_path(name: str) -> Path:
    p = Path(name)
    if not p.is_absolute():
        p = PLAYBOOKS_DIR / (name if name.endswith((".yml", ".yaml")) else f"{name}.yml")
    if not p.is_file():
        known = ", ".join(sorted(x.stem for x in PLAYBOOKS_DIR.glob("*.yml")))
        raise UsageError(f"unknown playbook {name!r}; available: {known}")
    return p


def _envvars(inv: inventory_mod.Inventory) -> dict[str, str]:
    conn = inventory_mod.connection(inv)
    ssh_args = [
        "-o ControlMaster=auto",
        "-o ControlPersist=120s",
        f"-o UserKnownHostsFile={conn.known_hosts}",
        "-o StrictHostKeyChecking=yes",
        "-o GlobalKnownHostsFile=/dev/null",
    ]
    env = {
        "ANSIBLE_CONFIG": str(PLAYBOOKS_DIR / "ansible.cfg"),
        "ANSIBLE_SSH_ARGS": " ".join(ssh_args),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(faultbook_home() / "cp"),
        "ANSIBLE_NOCOLOR": "1",
        # ansible-playbook lives next to this interpreter (the venv), even when it is not on PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    if conn.key_file:
        env["ANSIBLE_PRIVATE_KEY_FILE"] = str(conn.key_file)
    pw = secrets.vault_password_file(inv)
    if pw is not None:
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(pw)
    return env


def run_playbook(
    playbook: str,
    inventory: str | os.PathLike[str] | inventory_mod.Inventory | None = None,
    extravars: Mapping[str, Any] | None = None,
    limit: str | None = None,
    check: bool = False,
    tags: str | None = None,
    event_handler: EventHandler | None = None,
    raise_on_failure: bool = True,
) -> PlaybookResult:
    """Run a playbook against an inventory; raise PlaybookFailed naming host, task and message."""
    import ansible_runner

    inv = (
        inventory
        if isinstance(inventory, inventory_mod.Inventory)
        else inventory_mod.load(inventory)
    )
    path = playbook_path(playbook)
    if limit:
        for part in limit.replace(",", ":").split(":"):
            name = part.strip().lstrip("!&")
            if name and name not in inv.groups and name not in inv.hosts and "*" not in name:
                inv.host(name)  # raises, listing the known hosts
    private = state_dir(inv, create=True) / "runner"
    (private / "env").mkdir(parents=True, exist_ok=True)
    evars: dict[str, Any] = {"faultbook_pki_dir": str(state_dir(inv, create=True) / "pki")}
    evars.update(extravars or {})
    cmdline = []
    if inv.is_lab:
        secrets.ensure_lab_vault()  # a secret added since `lab up` made the vault
    vault_vars = secrets.vault_vars_file(inv)
    if vault_vars is not None:
        cmdline += ["-e", f"@{vault_vars}"]
    if check:
        cmdline += ["--check", "--diff"]
    if tags:
        cmdline += ["--tags", tags]
    events: list[dict[str, Any]] = []

    def on_event(ev: dict[str, Any]) -> bool:
        events.append(ev)
        if event_handler:
            event_handler(ev)
        return True

    _prune_artifacts(private / "artifacts")
    t0 = time.monotonic()
    r = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(PLAYBOOKS_DIR),
        playbook=str(path),
        inventory=str(inv.path.resolve()),
        extravars=evars,
        limit=limit,
        cmdline=" ".join(cmdline) or None,
        envvars=_envvars(inv),
        quiet=True,
        event_handler=on_event,
        rotate_artifacts=0,  # pruned by _prune_artifacts: never another process's live run
    )
    duration = time.monotonic() - t0
    stats: dict[str, HostStats] = {}
    raw = r.stats or {}
    hosts = set().union(
        *(
            raw.get(k, {})
            for k in ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")
        )
    )
    for h in hosts:
        stats[h] = HostStats(
            ok=raw.get("ok", {}).get(h, 0),
            changed=raw.get("changed", {}).get(h, 0),
            failed=raw.get("failures", {}).get(h, 0),
            unreachable=raw.get("dark", {}).get(h, 0),
            skipped=raw.get("skipped", {}).get(h, 0),
            rescued=raw.get("rescued", {}).get(h, 0),
            ignored=raw.get("ignored", {}).get(h, 0),
        )
    result = PlaybookResult(path.name, str(r.status), int(r.rc or 0), stats, duration, events)
    if raise_on_failure and not result.ok:
        host, task, msg = first_failure(events)
        if msg is None:
            tail = (r.stdout.read() if r.stdout else "").strip().splitlines()[-3:]
            msg = " | ".join(tail) or f"ansible-runner status {r.status}"
        raise PlaybookFailed(path.name, result.rc, host, task, msg)
    return result


def _prune_artifacts(artifacts: Path, keep: int = 20, min_age_s: float = 3600) -> None:
    """Delete old run folders: beyond the newest KEEP, and only those untouched for an hour.

    ansible-runner's own rotation deletes by count, including the folders of
    runs still going on in other processes (drills and tests run playbooks
    side by side on one inventory).
    """
    if not artifacts.is_dir():
        return
    runs = sorted((p for p in artifacts.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    cutoff = time.time() - min_age_s
    for p in runs[: max(0, len(runs) - keep)]:
        if p.stat().st_mtime < cutoff:
            shutil.rmtree(p, ignore_errors=True)


def first_failure(events: list[dict[str, Any]]) -> tuple[str | None, str | None, str | None]:
    """The first failed or unreachable task in a run: (host, task, Ansible's message)."""
    for ev in events:
        kind = ev.get("event")
        data = ev.get("event_data", {})
        if kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
            res = data.get("res", {}) or {}
            msg = res.get("msg") or res.get("stderr") or res.get("reason") or "failed"
            if (
                isinstance(msg, str)
                and res.get("stderr")
                and res.get("msg")
                and res["stderr"] not in msg
            ):
                msg = f"{msg}: {res['stderr']}"
            return data.get("host"), data.get("task"), str(msg).strip()[:800]
    return None, None, None


def progress_printer(echo: Callable[[str], None]) -> EventHandler:
    """An event handler that prints plays, tasks, and each change or failure as it happens."""

    def handle(ev: dict[str, Any]) -> None:
        kind = ev.get("event")
        d = ev.get("event_data", {})
        if kind == "playbook_on_play_start":
            echo(f"PLAY  {d.get('play', '')}")
        elif kind == "playbook_on_task_start":
            echo(f"  TASK  {d.get('task', '')}")
        elif kind == "runner_on_ok" and d.get("res", {}).get("changed"):
            echo(f"    changed: {d.get('host')}")
        elif kind == "runner_on_failed" and not d.get("ignore_errors"):
            echo(f"    FAILED: {d.get('host')}: {(d.get('res') or {}).get('msg', '')}")
        elif kind == "runner_on_unreachable":
            echo(f"    UNREACHABLE: {d.get('host')}: {(d.get('res') or {}).get('msg', '')}")

    return handle
