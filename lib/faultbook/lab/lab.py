"""Orchestrate the lab: image, keys, bridge, hosts; up, down, status, faults.

Everything the lab knows about its topology comes from
inventories/lab/hosts.yml; all of its state lives under
``$FAULTBOOK_HOME/lab`` (images under ``$FAULTBOOK_HOME/images``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from faultbook import inventory as inventory_mod
from faultbook import secrets, ssh
from faultbook.errors import (
    ConditionTimeout,
    ConfigError,
    LabBusy,
    LabError,
    SSHError,
    UsageError,
)
from faultbook.inventory import Inventory
from faultbook.lab import image, machine, net
from faultbook.paths import LAB_INVENTORY, faultbook_home, lab_state_dir
from faultbook.poll import poll, until

log = logging.getLogger(__name__)

REQUIRED_TOOLS = {
    "systemd-nspawn": "apt-get install systemd-container",
    "debootstrap": "apt-get install debootstrap",
    "ip": "apt-get install iproute2",
    "tc": "apt-get install iproute2",
    "ssh-keygen": "apt-get install openssh-client",
}


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    groups: list[str]
    state: str  # running | stopped
    pid: int | None
    link: str  # up | cut | absent
    netem: str | None
    disk: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preflight() -> None:
    """Raise ConfigError (exit 2) when this machine cannot run the lab, saying how to fix it."""
    if os.geteuid() != 0:
        raise ConfigError(
            "the lab needs root (it creates a bridge, overlay mounts and nspawn machines); "
            "run it with sudo or as root"
        )
    for tool, fix in REQUIRED_TOOLS.items():
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} is not installed; fix with: {fix}")


class Lab:
    """The lab described by an inventory (default: inventories/lab/hosts.yml)."""

    def __init__(self, inv: Inventory | None = None) -> None:
        self.inv = inv or inventory_mod.load(LAB_INVENTORY)
        missing = [
            k for k in ("lab_bridge", "lab_subnet", "controller_ip") if k not in self.inv.vars
        ]
        if missing:
            raise inventory_mod.InventoryError(
                f"{self.inv.path}: all.vars lacks {', '.join(missing)}; the lab needs them"
            )
        self.bridge = str(self.inv.vars["lab_bridge"])
        self.subnet = str(self.inv.vars["lab_subnet"])
        self.controller_ip = str(self.inv.vars["controller_ip"])
        inventory_mod.require_ipv4_in(self.inv, self.subnet)
        self.prefix = ipaddress.ip_network(self.subnet).prefixlen
        self.user = str(self.inv.vars.get("ansible_user", image.DEPLOY_USER))
        if self.user != image.DEPLOY_USER:
            raise inventory_mod.InventoryError(
                f"{self.inv.path}: ansible_user is {self.user!r}; the lab image provides "
                f"{image.DEPLOY_USER!r}"
            )
        self.home = faultbook_home()
        self.dir = lab_state_dir()
        self.ssh_dir = self.dir / "ssh"

    # ----------------------------------------------------------------- helpers
    def dirs(self, host: str) -> machine.HostDirs:
        return machine.HostDirs(self.dir / "hosts" / host)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise LabBusy(
                    f"another faultbook lab command (pid {holder}) holds {path}; "
                    "wait for it to finish"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def pid(self, host: str) -> int | None:
        return machine.find_nspawn(host, self.dirs(host).root)

    def _keys(self) -> None:
        """Create the deploy key and one host key per host; write known_hosts."""
        self.ssh_dir.mkdir(parents=True, exist_ok=True)
        self.ssh_dir.chmod(0o700)
        user_key = self.ssh_dir / "id_ed25519"
        if not user_key.exists():
            _keygen(user_key, f"faultbook-lab-{self.user}")
        lines = []
        for h in self.inv.hosts.values():
            hk = self.ssh_dir / "hostkeys" / f"{h.name}_ed25519"
            if not hk.exists():
                hk.parent.mkdir(parents=True, exist_ok=True)
                _keygen(hk, f"root@{h.name}")
            lines.append(ssh.known_hosts_line([h.address, h.name], hk.with_suffix(".pub")))
        known = self.ssh_dir / "known_hosts"
        tmp = known.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.rename(known)

    # ------------------------------------------------------------------ up/down
    def up(self, timeout: float = 120.0) -> list[HostStatus]:
        preflight()
        with self.lock():
            root = image.build(self.home)
            self._keys()
            secrets.ensure_lab_vault()
            net.bridge_up(self.bridge, self.controller_ip, self.subnet)
            to_wait = []
            for h in self.inv.hosts.values():
                if self.pid(h.name) is None:
                    self._boot(h.name, root)
                    to_wait.append(h.name)
                elif net.link_state(h.name, self.bridge) == "absent":
                    raise LabError(f"{h.name} runs but has no link; run `faultbook lab down`")
            self.wait_ready(list(self.inv.hosts), timeout)
            return self.status()

    def _boot(self, host: str, image_root: Path) -> None:
        h = self.inv.host(host)
        d = self.dirs(host)
        machine.mount(d, image_root)
        binds: tuple[tuple[Path, str], ...] = ()
        data = machine.data_fs_for(h.groups)
        if data is not None and (machine.data_disks_wanted() or d.data_image.exists()):
            guest, size_mib = data
            try:
                if machine.mount_data(d, image_root, guest, size_mib):
                    binds = ((d.data, guest),)
            except LabError as exc:
                if d.data_image.exists():
                    raise  # its data lives there: never boot it without
                log.warning("lab: %s boots without a data disk (%s)", host, exc)
        machine.personalise(
            d,
            h.name,
            h.address,
            self.prefix,
            self.ssh_dir / "hostkeys" / f"{h.name}_ed25519",
            (self.ssh_dir / "id_ed25519.pub").read_text(),
            self.user,
        )
        machine.start(h.name, d, self.bridge, binds)
        log.info("lab: booting %s (%s)", h.name, h.address)

    def wait_ready(self, hosts: list[str], timeout: float) -> None:
        """Wait until each host accepts SSH and systemd reports running.

        Raises LabError naming each host that is not, and its failed units.
        """

        def one(host: str) -> str | None:
            last = ["no answer"]
            started = time.monotonic()

            def attempt(_t: float) -> tuple[str | None] | None:
                if self.pid(host) is None:
                    return (f"{host}: its nspawn process exited (see {self.dirs(host).log})",)
                left = max(1.0, timeout - (time.monotonic() - started))
                try:
                    r = ssh.run(
                        self.inv,
                        host,
                        f"timeout {int(left)} systemctl is-system-running --wait; "
                        "systemctl --failed --plain --no-legend | awk '{print $1}'",
                        timeout=min(5.0, left) if last[0] == "no answer" else left + 5,
                    )
                except SSHError as exc:
                    last[0] = exc.message
                    return None
                lines = r.stdout.split()
                state = lines[0] if lines else "unknown"
                if state == "running":
                    return (None,)
                if state == "degraded":
                    failed = ", ".join(lines[1:])
                    return (f"{host}: systemd is degraded; failed units: {failed}",)
                last[0] = f"systemd state {state}"
                return None

            try:
                return poll(attempt, timeout, what=f"{host} ready", interval_s=0.3)[0]
            except ConditionTimeout:
                return f"{host}: not ready after {timeout:g}s ({last[0]})"

        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            problems = [p for p in pool.map(one, hosts) if p]
        if problems:
            raise LabError("; ".join(problems))

    def down(
        self, keep_disks: bool = False, timeout: float = 6.0, exit_timeout: float = 10.0
    ) -> None:
        """Stop every host, unmount, delete the bridge; return when nothing of it runs.

        Each host gets ``timeout`` seconds to power off cleanly (then it is
        killed); then every host's processes (its nspawn, its cgroups, its pid
        namespace) get ``exit_timeout`` seconds to be gone, what is left is
        SIGKILLed and waited for again. LabError names any host with processes
        left after that; its disk and mount are kept.
        """
        preflight()
        with self.lock():
            pids = {h: self.pid(h) for h in self.inv.hosts}
            for h in self.inv.hosts:
                self._netem_clear(h, None)
            running = {h: p for h, p in pids.items() if p is not None}
            # A host's pid namespace can only be read while its PID 1 lives.
            pidns = {
                h: machine.pid_namespace(machine.container_init(p)) for h, p in running.items()
            }

            def stop(item: tuple[str, int]) -> None:
                host, pid = item
                if not machine.poweroff(pid, timeout):
                    log.warning("lab: %s did not power off in %.0fs; killing it", host, timeout)
                    machine.crash(pid)

            with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
                list(pool.map(stop, running.items()))
            for h in running:
                ssh.forget(self.inv.host(h).address)
            hosts = {h: (self.dirs(h).root, pidns.get(h)) for h in self.inv.hosts}
            left = machine.wait_processes_gone(lambda: machine.processes(hosts), exit_timeout)
            # A killed host's network namespace (and so its veth) goes away asynchronously.
            ours = {net.veth_name(h) for h in self.inv.hosts}
            until(lambda: not ours & set(net.veths()), 5)
            for veth in ours & set(net.veths()):
                net.delete_link(veth)
            busy: list[str] = []
            for host in self.inv.hosts:
                if host in left:
                    continue  # never unmount or delete the disk under a live process
                d = self.dirs(host)
                machine.unmount(d)
                machine.remove_cgroups(host)
                if not machine.unmount_data(d):
                    busy.append(host)  # rmtree would empty the mounted disk, then fail
                    continue
                if not keep_disks and d.base.exists():
                    shutil.rmtree(d.base)
            problems = []
            if left:
                problems.append(
                    "processes still run after SIGKILL: "
                    + "; ".join(
                        f"{h} (pids {', '.join(map(str, sorted(p)))})" for h, p in left.items()
                    )
                )
            if busy:
                problems.append(
                    f"the data disk of {', '.join(busy)} stays mounted (its files are kept): "
                    f"umount {self.dir / 'hosts'}/HOST/data"
                )
            if problems:
                raise LabError("lab down: " + "; ".join(problems))
            net.bridge_down(self.bridge)

    # -------------------------------------------------------------- primitives
    def _require_running(self, host: str) -> int:
        self.inv.host(host)
        pid = self.pid(host)
        if pid is None:
            raise LabError(f"{host} is not running; start it with `faultbook lab boot {host}`")
        return pid

    def crash(self, host: str) -> None:
        """Power loss: SIGKILL the whole machine. Its disk stays."""
        preflight()
        pid = self._require_running(host)
        self._netem_clear(host, None)  # its socket would keep the dead host's netns alive
        machine.crash(pid)
        ssh.forget(self.inv.host(host).address)  # no command waits on a dead connection
        machine.remove_cgroups(host)

    def boot(self, host: str, timeout: float = 120.0) -> None:
        """Start a stopped host again, disk intact, and wait until it is ready."""
        preflight()
        self.inv.host(host)
        if self.pid(host) is None:
            if not net.link_exists(self.bridge):
                raise LabError(f"the lab is down (no bridge {self.bridge}); run `faultbook lab up`")
            stale = net.veth_name(host)
            if net.link_exists(stale):
                # The dead host's network namespace can outlive it for minutes (orphaned
                # TCP sockets of a partitioned host retransmit into the void) and keeps
                # its veth; nspawn could not create the new one. Deleting our end of
                # the pair removes both.
                net.delete_link(stale)
            self._boot(host, image.build(self.home))
        self.wait_ready([host], timeout)

    def partition(self, host: str) -> None:
        preflight()
        self._require_running(host)
        net.cut(host)

    def heal(self, host: str) -> None:
        """Reconnect HOST's link and clear any delay or loss."""
        preflight()
        pid = self._require_running(host)
        net.heal(host, self.bridge)
        self._netem_clear(host, machine.container_init(pid))

    def addresses(self, host: str) -> str:
        """``ip -o -4 addr show`` inside HOST's network namespace: read from the
        controller, so it answers while HOST's link is cut."""
        init = machine.container_init(self._require_running(host))
        if init is None:
            raise LabError(f"{host} has no init process to read its addresses from")
        proc = subprocess.run(
            ["nsenter", f"--net=/proc/{init}/ns/net", "ip", "-o", "-4", "addr", "show"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if proc.returncode != 0:
            raise LabError(f"cannot read {host}'s addresses: {proc.stderr.strip()[:200]}")
        return proc.stdout

    def netem(self, host: str, delay_ms: float, loss_pct: float) -> None:
        """Delay and drop the packets HOST sends (replaces any earlier setting)."""
        preflight()
        if delay_ms < 0 or delay_ms > 60_000 or not 0 <= loss_pct <= 100:
            raise UsageError(
                f"netem needs 0 <= --delay <= 60000 ms and 0 <= --loss <= 100 %, "
                f"got delay {delay_ms:g}, loss {loss_pct:g}"
            )
        init = machine.container_init(self._require_running(host))
        if init is None:
            raise LabError(f"{host}: cannot find its PID 1")
        self._netem_clear(host, init)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "faultbook.lab.delay",
                "--netns-pid",
                str(init),
                "--queue",
                str(net.QUEUE),
                "--delay-ms",
                str(delay_ms),
                "--loss-pct",
                str(loss_pct),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 5)
        line = proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            proc.kill()
            err = proc.stderr.read().strip().splitlines()[-1:] if proc.stderr else []
            raise LabError(f"{host}: the delay process did not start: {' '.join(err) or line}")
        state = {"pid": proc.pid, "delay_ms": delay_ms, "loss_pct": loss_pct}
        (self.dirs(host).base / "netem.json").write_text(json.dumps(state))
        net.queue_rule_add(init)

    def _netem_clear(self, host: str, init: int | None) -> None:
        if init is not None:
            net.queue_rule_del(init)
        f = self.dirs(host).base / "netem.json"
        if f.exists():
            pid = json.loads(f.read_text()).get("pid")
            if pid and "faultbook.lab.delay" in " ".join(machine._cmdline(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                machine._wait_gone(pid, 3)
            f.unlink()

    def netem_state(self, host: str) -> str | None:
        f = self.dirs(host).base / "netem.json"
        if not f.exists():
            return None
        st = json.loads(f.read_text())
        if not machine._cmdline(st.get("pid", 0)):
            return None
        return f"delay {st['delay_ms']:g}ms loss {st['loss_pct']:g}%"

    # ------------------------------------------------------------------ status
    def status(self) -> list[HostStatus]:
        out = []
        for h in self.inv.hosts.values():
            pid = self.pid(h.name)
            link = net.link_state(h.name, self.bridge) if pid else "absent"
            out.append(
                HostStatus(
                    name=h.name,
                    address=h.address,
                    groups=list(h.groups),
                    state="running" if pid else "stopped",
                    pid=pid,
                    link=link,
                    netem=self.netem_state(h.name) if pid else None,
                    disk=self.dirs(h.name).upper.exists(),
                )
            )
        return out

    def summary(self) -> dict[str, Any]:
        hosts = self.status()
        running = sum(h.state == "running" for h in hosts)
        return {
            "home": str(self.home),
            "bridge": self.bridge if net.link_exists(self.bridge) else None,
            "image": str(image.image_dir(self.home)) if image.is_built(self.home) else None,
            "state": "up" if running == len(hosts) else ("down" if running == 0 else "partial"),
            "hosts": [h.to_dict() for h in hosts],
        }


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


def power_on(inv: Inventory, host: str) -> bool:
    """In the lab, boot HOST if it is powered off while the lab runs (what a person would do
    at the console); True when it had to be booted. Not the lab, the lab down (no bridge:
    nothing to boot into), or running already: nothing, False."""
    if not inv.is_lab:
        return False
    lab = Lab(inv)
    if lab.pid(host) is not None or not net.link_exists(lab.bridge):
        return False
    log.info("%s is powered off: booting it (lab power control)", host)
    lab.boot(host)
    return True
