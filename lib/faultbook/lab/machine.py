"""One lab host: its disk (an overlayfs upper directory), its boot and its power.

A host is a systemd-nspawn machine booted with systemd as PID 1 on an
overlayfs root: the shared image below, the host's own upper directory
above. The upper directory is the host's disk; it survives a crash.

db, backup and mon hosts also get a data disk (``DATA_FS``): a sparse ext4
image file in the host's directory, loop-mounted on the controller and bound
into the machine at the path the tier keeps its data under. Its free space is
bounded, so a disk-full drill (``drills.hostfaults``) fills that filesystem and
not the controller's disk that every overlay lives on. Like the upper
directory it survives a crash (it stays mounted on the controller).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from faultbook.errors import LabError
from faultbook.lab import net
from faultbook.poll import until

log = logging.getLogger(__name__)

NETWORK_FILE = "etc/systemd/network/10-faultbook-host0.network"
# The data disk of each group's hosts: where it is bound in the host, its size in MiB.
# Sparse: the controller's disk pays only for what is written (a disk-full drill's
# fallocate'd file writes nothing), and sized for make bench's 1 GiB seed database,
# its WAL and replication slots (up to 2 GB), two full backups and Prometheus' 2 GB.
DATA_FS: dict[str, tuple[str, int]] = {
    "db": ("/var/lib/postgresql", 8192),
    "backup": ("/var/lib/pgbackrest", 12288),
    "mon": ("/var/lib/prometheus", 4096),
}
DATA_LABEL = "faultbook-data"


@dataclass(frozen=True)
class HostDirs:
    """Where one host's state lives under FAULTBOOK_HOME/lab/hosts/<name>."""

    base: Path

    @property
    def upper(self) -> Path:
        return self.base / "upper"

    @property
    def work(self) -> Path:
        return self.base / "work"

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def log(self) -> Path:
        return self.base / "console.log"

    @property
    def data_image(self) -> Path:
        return self.base / "data.ext4"

    @property
    def data(self) -> Path:
        """Where the data disk is mounted on the controller (bound into the host)."""
        return self.base / "data"


def is_mounted(path: Path) -> bool:
    target = str(path.resolve()) if path.exists() else str(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def mount(dirs: HostDirs, image_root: Path) -> None:
    if is_mounted(dirs.root):
        return
    for d in (dirs.upper, dirs.work, dirs.root):
        d.mkdir(parents=True, exist_ok=True)
    opts = f"lowerdir={image_root},upperdir={dirs.upper},workdir={dirs.work}"
    proc = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(dirs.root)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise LabError(f"cannot mount the overlay root at {dirs.root}: {proc.stderr.strip()}")


def unmount(dirs: HostDirs) -> None:
    for _ in range(20):
        if not is_mounted(dirs.root):
            return
        proc = subprocess.run(["umount", str(dirs.root)], capture_output=True, text=True)
        if proc.returncode == 0:
            continue
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(dirs.root)], capture_output=True)


# The data disks are opt-in: a loop device under PostgreSQL's WAL makes every fsync
# go through two filesystems, and the switchover benchmark measured slower with them
# (docs/benchmarks.md). The game day, whose disk-full entries need them, turns them on.
DATA_DISKS_ENV = "FAULTBOOK_LAB_DATA_DISKS"


def data_disks_wanted() -> bool:
    """Whether hosts booted now get a data disk (``FAULTBOOK_LAB_DATA_DISKS=1``)."""
    return os.environ.get(DATA_DISKS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def data_fs_for(groups: tuple[str, ...] | list[str]) -> tuple[str, int] | None:
    """(path in the host, MiB) of the data disk a host of GROUPS gets, or None."""
    return next((v for g, v in DATA_FS.items() if g in groups), None)


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:
        raise LabError(f"cannot {what}: {cmd[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        raise LabError(f"cannot {what}: {(proc.stderr or proc.stdout).strip()[:300]}")


def mount_data(dirs: HostDirs, image_root: Path, guest: str, size_mib: int) -> bool:
    """Mount the host's data disk at ``dirs.data``, making it on first use; True when mounted.

    A new disk is a sparse ext4 image holding what the image has at GUEST (``mkfs -d``),
    its root owned like that directory. A host whose overlay already holds data at GUEST
    (booted before data disks existed) keeps it there: False, nothing made. LabError when
    the disk cannot be made (nothing is left behind) or an existing one cannot be mounted.
    """
    if is_mounted(dirs.data):
        return True
    rel = guest.strip("/")
    fresh = not dirs.data_image.exists()
    if fresh:
        on_overlay = dirs.upper / rel
        if on_overlay.is_dir() and any(on_overlay.iterdir()):
            log.warning(
                "lab: %s keeps its data on its overlay disk (made before data disks); "
                "`faultbook lab down` and `lab up` give it a bounded one",
                guest,
            )
            return False
        dirs.base.mkdir(parents=True, exist_ok=True)
        src = image_root / rel
        tmp = dirs.data_image.with_name(dirs.data_image.name + ".new")
        try:
            with open(tmp, "wb") as f:
                f.truncate(size_mib << 20)
            cmd = ["mkfs.ext4", "-q", "-F", "-L", DATA_LABEL, "-E", "nodiscard"]
            _run(cmd + (["-d", str(src)] if src.is_dir() else []) + [str(tmp)], "make a data disk")
            tmp.rename(dirs.data_image)
        finally:
            tmp.unlink(missing_ok=True)
    dirs.data.mkdir(parents=True, exist_ok=True)
    try:
        _run(["mount", "-o", "loop", str(dirs.data_image), str(dirs.data)], "mount the data disk")
    except LabError:
        if fresh:
            dirs.data_image.unlink()  # nothing is on it yet: the host boots without one
        raise
    if fresh and (image_root / rel).is_dir():
        st = (image_root / rel).stat()
        os.chown(dirs.data, st.st_uid, st.st_gid)
        dirs.data.chmod(stat.S_IMODE(st.st_mode))
    return True


def unmount_data(dirs: HostDirs) -> bool:
    """Unmount the data disk (its loop device goes with it); True when it is not mounted."""
    for _ in range(20):
        if not is_mounted(dirs.data):
            return True
        if subprocess.run(["umount", str(dirs.data)], capture_output=True).returncode != 0:
            time.sleep(0.2)
    return not is_mounted(dirs.data)


def _write(path: Path, text: str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".fbtmp")
    tmp.write_text(text)
    os.chown(tmp, uid, gid)
    tmp.chmod(mode)
    tmp.rename(path)


def hosts_file(path: Path, name: str) -> str:
    """/etc/hosts with this host's own name, keeping every other line (roles add peers)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [ln for ln in lines if not ln.startswith(("127.0.0.1", "127.0.1.1", "::1"))]
    return (
        "\n".join(
            ["127.0.0.1 localhost", f"127.0.1.1 {name}", "::1 localhost ip6-localhost", *kept]
        )
        + "\n"
    )


def _passwd_ids(root: Path, user: str) -> tuple[int, int, str]:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == user:
            return int(f[2]), int(f[3]), f[5]
    raise LabError(f"the lab image has no user {user!r}")


def personalise(
    dirs: HostDirs,
    name: str,
    address: str,
    prefix: int,
    host_key: Path,
    authorized_key: str,
    user: str,
) -> None:
    """Give a (mounted) host its identity: name, address, host key, deploy key."""
    root = dirs.root
    _write(root / "etc/hostname", name + "\n")
    _write(root / "etc/hosts", hosts_file(root / "etc/hosts", name))
    mid = root / "etc/machine-id"
    if not mid.exists() or not mid.read_text().strip():
        _write(mid, os.urandom(16).hex() + "\n", 0o444)
    _write(
        root / NETWORK_FILE,
        "# written by faultbook lab: the address from inventories/lab/hosts.yml\n"
        f"[Match]\nName=host0\n\n[Network]\nAddress={address}/{prefix}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n",
    )
    ssh = root / "etc/ssh"
    _write(ssh / "ssh_host_ed25519_key", host_key.read_text(), 0o600)
    _write(ssh / "ssh_host_ed25519_key.pub", host_key.with_suffix(".pub").read_text(), 0o644)
    uid, gid, home = _passwd_ids(root, user)
    sshdir = root / home.lstrip("/") / ".ssh"
    sshdir.mkdir(parents=True, exist_ok=True)
    os.chown(sshdir, uid, gid)
    sshdir.chmod(0o700)
    _write(sshdir / "authorized_keys", authorized_key.strip() + "\n", 0o600, uid, gid)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def find_nspawn(name: str, root: Path) -> int | None:
    """PID of the nspawn process running this host, found from /proc (adopts leftovers)."""
    want_m = f"--machine={name}"
    want_d = f"--directory={root}"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = _cmdline(int(entry.name))
        if args and args[0].endswith("systemd-nspawn") and want_m in args and want_d in args:
            return int(entry.name)
    return None


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            kids.append(int(entry.name))
    return kids


def container_init(nspawn_pid: int) -> int | None:
    """The host's PID 1 as seen from the controller (a child of nspawn in its own pidns)."""
    try:
        own = os.readlink(f"/proc/{nspawn_pid}/ns/pid")
    except OSError:
        return None
    for kid in _children(nspawn_pid):
        try:
            if os.readlink(f"/proc/{kid}/ns/pid") != own:
                return kid
        except OSError:
            continue
    return None


CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "faultbook"


def cgroup_dirs(name: str) -> list[Path]:
    """This host's own cgroup in each hierarchy systemd uses (v2, or the hybrid v1 one).

    Without a host systemd, --keep-unit leaves every nspawn in the caller's
    cgroup, so the hosts' systemds would share (and tear down) one cgroup
    tree. Each host gets its own before nspawn starts.
    """
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup v2
        return [CGROUP_ROOT / CGROUP_PARENT / name]
    return [
        CGROUP_ROOT / hier / CGROUP_PARENT / name
        for hier in ("systemd", "unified")
        if (CGROUP_ROOT / hier / "cgroup.procs").exists()
    ]


def remove_cgroups(name: str) -> None:
    for top in cgroup_dirs(name):
        if not top.exists():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
        with contextlib.suppress(OSError):
            top.parent.rmdir()  # the shared parent, once the last host is gone


def start(name: str, dirs: HostDirs, bridge: str, binds: tuple[tuple[Path, str], ...] = ()) -> int:
    """Boot the host; return the nspawn PID. The caller waits for SSH.

    ``binds``: (directory on the controller, path in the host), e.g. its data disk.
    """
    cgroups = cgroup_dirs(name)
    for cg in cgroups:
        cg.mkdir(parents=True, exist_ok=True)
    enter = "".join(f'echo $$ > "{cg}/cgroup.procs"; ' for cg in cgroups)
    cmd = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--machine={name}",
        f"--directory={dirs.root}",
        f"--network-bridge={bridge}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=passive",
        *(f"--bind={src}:{dst}" for src, dst in binds),
    ]
    # Detach: nspawn must not be a child of this (possibly long-lived) process, or a
    # crashed host would linger as a zombie until we exit. The shell joins the host's
    # cgroup, starts nspawn in the background, prints its PID and exits.
    script = f'set -e; {enter}"$@" </dev/null >>"{dirs.log}" 2>&1 & echo $!'
    launcher = subprocess.run(
        ["/bin/sh", "-c", script, "faultbook-nspawn", *cmd],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        start_new_session=True,
    )
    if launcher.returncode != 0 or not launcher.stdout.strip().isdigit():
        raise LabError(f"{name}: cannot start systemd-nspawn: {launcher.stderr.strip()}")
    pid = int(launcher.stdout.strip())

    # Wait for the veth so the caller can rely on the link existing.
    def linked() -> bool:
        if not _alive(pid):
            tail = dirs.log.read_text(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"{name}: systemd-nspawn exited at once: {' | '.join(tail)}")
        return net.link_exists(net.veth_name(name))

    until(linked, 10, interval_s=0.05)
    return pid


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child, or it stays a zombie
        return not _alive(pid)

    return until(gone, timeout, interval_s=0.05)


def crash(nspawn_pid: int) -> None:
    """Power loss: SIGKILL the host's PID 1 (which kills its whole pid namespace), then nspawn."""
    init = container_init(nspawn_pid)
    if init is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(nspawn_pid, signal.SIGKILL)
    if not _wait_gone(nspawn_pid, 5):
        raise LabError(f"nspawn process {nspawn_pid} did not die after SIGKILL")
    if init is not None:
        _wait_gone(init, 5)


def poweroff(nspawn_pid: int, timeout: float) -> bool:
    """Ask the host to shut down cleanly; True when it did within ``timeout``."""
    # systemd-nspawn --boot turns SIGTERM into SIGRTMIN+3 for the container's systemd:
    # a clean poweroff.
    with contextlib.suppress(ProcessLookupError):
        os.kill(nspawn_pid, signal.SIGTERM)
    return _wait_gone(nspawn_pid, timeout)


# ------------------------------------------------------------------ every process of a host


def pid_namespace(pid: int | None) -> str | None:
    """The pid namespace of a process (``pid:[4026532…]``), or None when it is gone."""
    if pid is None:
        return None
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _cgroup_pids(name: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(name):
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except (OSError, ValueError):
                continue
    return pids


def processes(hosts: Mapping[str, tuple[Path, str | None]]) -> dict[str, set[int]]:
    """The live processes of each host, given as name -> (root directory, pid namespace).

    A host's processes are its systemd-nspawn, every process in its cgroups
    (nspawn and the machine's own systemd tree) and every process in its pid
    namespace (when known: it must be read while the host's PID 1 lives).
    """
    found = {h: _cgroup_pids(h) for h in hosts}
    own_ns = pid_namespace(os.getpid())
    by_ns = {ns: h for h, (_, ns) in hosts.items() if ns and ns != own_ns}
    wants = {h: (f"--machine={h}", f"--directory={root}") for h, (root, _) in hosts.items()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if by_ns:
            host = by_ns.get(pid_namespace(pid) or "")
            if host is not None:
                found[host].add(pid)
        args = _cmdline(pid)
        if args and args[0].endswith("systemd-nspawn"):
            for h, (want_m, want_d) in wants.items():
                if want_m in args and want_d in args:
                    found[h].add(pid)
    return {h: {p for p in pids if _alive(p)} for h, pids in found.items()}


def wait_processes_gone(
    find: Callable[[], Mapping[str, set[int]]],
    timeout: float,
    kill_timeout: float = 5.0,
    poll: float = 0.1,
) -> dict[str, set[int]]:
    """Wait until ``find()`` reports no process; then SIGKILL what is left and wait again.

    Returns what still runs after both waits (host -> pids): empty when all is gone.
    """

    def left() -> dict[str, set[int]]:
        return {h: set(p) for h, p in find().items() if p}

    if until(lambda: not left(), timeout, interval_s=poll):
        return {}
    remaining = left()
    log.warning(
        "lab: %s still running after %.0fs; killing them",
        ", ".join(f"{h} (pids {', '.join(map(str, sorted(p)))})" for h, p in remaining.items()),
        timeout,
    )

    def killed() -> bool:
        for pids in left().values():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)  # a zombie counts as gone (see _alive)
        return not left()

    until(killed, kill_timeout, interval_s=poll)
    return left()
