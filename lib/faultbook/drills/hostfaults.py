"""The faults of a host's own resources: its disk (``disk-full``) and its clock (``clock-skew``).

Both act over SSH (as the inventory's user, with sudo), arm a transient systemd
timer on the target that undoes them after ``max_s`` like the unit faults do,
and are journaled and rolled back like every fault (``drills.journal``). They
live here, registered into ``drills.faults.CATALOGUE``, so that neither module
grows past the size the layer test allows.

**disk-full** fills the filesystem holding ``path`` with one fallocate'd file,
``<mountpoint>/.faultbook-disk-full``, until ``leave_mib`` MiB are left to
unprivileged users (df's "Avail": what PostgreSQL, pgBackRest and Prometheus
see), and refuses with one line when that would take more than ``max_gib``,
when there is nothing to fill, or when the filesystem is not a data
filesystem (overlay, tmpfs, …). Revert deletes the file. ``path`` defaults to
the data the host's tier keeps (``DISK_PATHS``). In the lab a host's root is
an overlay on the controller's own disk: filling it would fill the controller
and every other host, so the fault refuses there; db, backup and mon hosts
get a bounded ext4 data filesystem of their own (``lab.machine.DATA_FS``).

**clock-skew** moves a clock by ``offset_s`` seconds (1 to ``MAX_OFFSET_S``,
either way). Without ``unit`` it steps the host's clock (``date -s``) with its
time synchronisation stopped (systemd-timesyncd, chrony, ntp, ntpsec or
openntpd, whichever runs), and the revert steps it back by the same offset and
starts them again. The lab cannot do that: every lab host reads the
controller's kernel clock (CLOCK_REALTIME has no namespace) and systemd-nspawn
does not grant CAP_SYS_TIME, so it is refused there. With ``unit`` the skew is
for that one service only, through libfaketime (Debian's ``faketime``): a
runtime drop-in sets ``LD_PRELOAD`` and ``FAKETIME`` and restarts the unit
(again at the revert). That works in the lab and on real hosts once libfaketime
is installed, and not for Go programs (Prometheus, Alertmanager, the
exporters), which read the clock without libc.
"""

from __future__ import annotations

import logging
import shlex
import time
from dataclasses import dataclass
from typing import ClassVar

from faultbook import ssh
from faultbook.drills import faults
from faultbook.drills.faults import Fault
from faultbook.errors import FaultError, ParameterError, UsageError

log = logging.getLogger(__name__)

MIB = 1 << 20
GIB = 1 << 30

# ---------------------------------------------------------------- disk-full
DISK_FULL_FILE = ".faultbook-disk-full"
# The data each tier keeps, from the roles: PostgreSQL's WAL (pg_wal, in the data
# directory unless it is a symlink to a WAL filesystem of its own), the pgBackRest
# repository, Prometheus' TSDB and Alertmanager's state; the ledger keeps nothing on
# disk, so a web host's /tmp (its root filesystem, and the ledger's PrivateTmp).
DISK_PATHS: dict[str, str] = {
    "db": "/var/lib/postgresql/15/main/pg_wal",
    "backup": "/var/lib/pgbackrest",
    "mon": "/var/lib/prometheus",
    "web": "/tmp",  # noqa: S108 - a path on the host, filled on purpose
}
# Filesystems that hold data on a disk. Anything else (overlay, tmpfs, nfs, …) is refused:
# an overlay's free space is its lower disk's (the lab: the controller's), a tmpfs is RAM.
DATA_FSTYPES = ("ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs")
MAX_LEAVE_MIB = 10_240
MAX_FILL_GIB = 1024
# A refusal from a script on the host: its stderr is the one line to show.
REFUSED_RC = 3
_SAFE_PATH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-@+")


def _safe_path(value: str) -> bool:
    return value.startswith("/") and set(value) <= _SAFE_PATH and ".." not in value.split("/")


def default_path(groups: tuple[str, ...]) -> str | None:
    """The path a disk-full fills by default on a host of GROUPS (None: no default)."""
    return next((p for g, p in DISK_PATHS.items() if g in groups), None)


@dataclass(frozen=True)
class FsState:
    """The filesystem holding a path, as df sees it (bytes)."""

    fstype: str
    avail: int  # free to unprivileged users
    size: int
    filled: int  # bytes already held by a disk-full file on it
    mount: str

    @property
    def free(self) -> int:
        """What would be free without a disk-full file."""
        return self.avail + self.filled


def parse_probe(out: str) -> FsState:
    """``FSTYPE AVAIL SIZE FILLED MOUNTPOINT`` (DiskFull's probe) into an FsState."""
    parts = out.strip().split(None, 4)
    if len(parts) != 5 or not all(p.isdigit() for p in parts[1:4]):
        raise FaultError(f"cannot read the filesystem's state from {out.strip()[:200]!r}")
    return FsState(parts[0], int(parts[1]), int(parts[2]), int(parts[3]), parts[4])


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _mib(n: float) -> str:
    return f"{n / MIB:.0f} MiB"


@dataclass
class _HostFault(Fault):
    """A fault acted on by a script on the host; a script's refusal is one line."""

    def _script(self, command: str, timeout: float = 30.0) -> str:
        r = ssh.run(self.inv, self.target, command, timeout=timeout, sudo=True)
        if r.rc == REFUSED_RC:
            raise FaultError(f"{self.describe()}: {' '.join(r.stderr.split())[:300]}")
        if not r.ok:
            raise FaultError(
                f"{self.describe()}: a command failed on {self.target} (rc={r.rc}): "
                f"{' '.join((r.stderr or r.stdout).split())[:300]}"
            )
        return r.stdout


@dataclass
class DiskFull(_HostFault):
    """Fill the filesystem holding a path to within leave_mib; revert deletes the file."""

    kind: ClassVar[str] = "disk-full"
    path: str = ""
    leave_mib: float = 16.0
    max_gib: float = 16.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path:
            host = self.inv.host(self.target)
            found = default_path(host.groups)
            if found is None:
                raise ParameterError(
                    f"disk-full has no default path for {self.target} (groups "
                    f"{', '.join(host.groups) or 'none'}; defaults exist for "
                    f"{', '.join(DISK_PATHS)}): give path"
                )
            self.path = found
        if not _safe_path(self.path):
            raise ParameterError(
                f"disk-full needs an absolute path of plain characters, got {self.path!r}"
            )
        if not 0 <= self.leave_mib <= MAX_LEAVE_MIB:
            raise ParameterError(
                f"disk-full leave_mib must be in [0, {MAX_LEAVE_MIB}] MiB, got {self.leave_mib!r}"
            )
        if not 0 < self.max_gib <= MAX_FILL_GIB:
            raise ParameterError(
                f"disk-full max_gib must be in (0, {MAX_FILL_GIB}] GiB, got {self.max_gib!r}"
            )

    def describe(self) -> str:
        return f"disk-full of {self.path} on {self.target}"

    @property
    def leave_bytes(self) -> int:
        return int(self.leave_mib * MIB)

    @property
    def cap_bytes(self) -> int:
        return int(self.max_gib * GIB)

    # ------------------------------------------------------------- scripts
    def _mount_of(self) -> str:
        """Shell: $m is the mountpoint of the filesystem holding the path, $f the file."""
        p = shlex.quote(self.path)
        return (
            f"m=$(df --output=target -- {p} | tail -n 1); "
            'if [ -z "$m" ]; then exit 1; fi; '
            f'f="${{m%/}}/{DISK_FULL_FILE}"; '
        )

    def probe_command(self) -> str:
        p = shlex.quote(self.path)
        return (
            self._mount_of() + "e=0; "
            'if [ -e "$f" ]; then set -- $(stat -c "%b %B" "$f"); e=$(($1 * $2)); fi; '
            f'echo "$(df -B1 --output=fstype,avail,size -- {p} | tail -n 1) $e $m"'
        )

    def inject_command(self, state: FsState) -> str:
        """Arm the revert timer, drop an earlier file, measure again, fallocate."""
        file = f"{state.mount.rstrip('/')}/{DISK_FULL_FILE}"
        q = shlex.quote(file)
        m = shlex.quote(state.mount)
        return (
            f"{self._arm_revert('diskfull', f'rm -f {q}')}; "
            f"rm -f {q}; sync -f {m} 2>/dev/null; "
            f"a=$(df -B1 --output=avail -- {m} | tail -n 1); n=$((a - {self.leave_bytes})); "
            'if [ "$n" -le 0 ]; then '
            f'echo "{state.mount} has only $a bytes free: nothing to fill" >&2; '
            f"exit {REFUSED_RC}; fi; "
            f'if [ "$n" -gt {self.cap_bytes} ]; then '
            f'echo "{state.mount} would need $n bytes, more than max_gib={self.max_gib:g}" >&2; '
            f"exit {REFUSED_RC}; fi; "
            f'fallocate -l "$n" {q} || {{ rm -f {q}; exit 1; }}; '
            f'echo "$n $(df -B1 --output=avail -- {m} | tail -n 1)"'
        )

    def revert_command(self) -> str:
        return f"{self._disarm_revert('diskfull')}; " + self._mount_of() + 'rm -f "$f"'

    # ------------------------------------------------------------- checks
    def refusal(self, state: FsState) -> str | None:
        """Why this filesystem must not be filled (one line), or None."""
        where = f"{self.path} on {self.target} is on {state.mount}"
        if state.fstype not in DATA_FSTYPES:
            why = f"{where}, a {state.fstype} filesystem, not a data filesystem"
            if state.fstype == "overlay" and self.inv.is_lab:
                why += (
                    " (a lab host's root: the controller's own disk, shared by every host); "
                    "in the lab only db, backup and mon hosts booted from a fresh disk have a "
                    "bounded data filesystem to fill"
                )
            return why
        need = state.free - self.leave_bytes
        if need <= 0:
            return (
                f"{where} with {_mib(state.free)} free, not more than "
                f"leave_mib={self.leave_mib:g}: nothing to fill"
            )
        if need > self.cap_bytes:
            return (
                f"{where} ({state.fstype}, {_gib(state.size)}): filling it to "
                f"{self.leave_mib:g} MiB would need {_gib(need)}, more than "
                f"max_gib={self.max_gib:g}; raise max_gib or use a smaller filesystem"
            )
        return None

    def probe(self) -> FsState:
        return parse_probe(self._script(self.probe_command()))

    def prepare(self) -> None:
        """Refuse before anything is journaled when the filesystem must not be filled."""
        why = self.refusal(self.probe())
        if why:
            raise FaultError(f"disk-full refused: {why}")

    # ------------------------------------------------------------ actions
    def _inject(self) -> None:
        state = self.probe()
        why = self.refusal(state)
        if why:
            raise FaultError(f"disk-full refused: {why}")
        out = self._script(self.inject_command(state), timeout=120).split()
        filled, left = (int(x) for x in out[-2:]) if len(out) >= 2 else (0, 0)
        self.detail = (
            f"{self.describe()}: {state.mount} filled with {_gib(filled)}, "
            f"{_mib(left)} left ({state.fstype})"
        )

    def _revert(self) -> None:
        self._script(self.revert_command())

    def in_effect(self) -> bool:
        out = self._script(self._mount_of() + 'if [ -e "$f" ]; then echo full; fi')
        return out.strip() == "full"

    def _settle(self) -> None:
        self._script(self._disarm_revert("diskfull"))

    def _clear_state(self) -> str:
        return f"no {DISK_FULL_FILE} on the filesystem of {self.path}"

    def _reverted_state(self) -> str:
        return f"{DISK_FULL_FILE} deleted"


# --------------------------------------------------------------- clock-skew
MAX_OFFSET_S = 300
CLOCK_STATE = "/run/faultbook-clock-skew"
# Time synchronisation a host may run; those active are stopped for the skew.
TIME_SYNC_UNITS = (
    "systemd-timesyncd.service",
    "chrony.service",
    "chronyd.service",
    "ntp.service",
    "ntpsec.service",
    "openntpd.service",
)
UNIT_SETTLE_S = 3  # a skewed unit must still run this long after its restart
FAKETIME_LIBS = "/usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1"
DROPIN_NAME = "faultbook-clock-skew.conf"
# Units whose programs are written in Go: they read the clock through the vDSO, not libc.
GO_UNITS = ("prometheus",)
_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-\\:")


def _step(sign: str, var: str) -> str:
    """Shell: step CLOCK_REALTIME by SIGN$VAR seconds, to the nanosecond (64-bit arithmetic)."""
    return (
        f"ns=$(date +%s%N); ns=$((ns {sign} {var} * 1000000000)); "
        'date -s "@$((ns / 1000000000)).$(printf %09d $((ns % 1000000000)))" >/dev/null'
    )


# Undo of a host-clock skew, for the revert and the timer: whoever moves the state file
# away steps the clock back, so the two never both do.
CLOCK_UNDO = (
    f"s={CLOCK_STATE}; "
    'mv "$s" "$s.undo" 2>/dev/null || exit 0; '
    'read o u < "$s.undo"; '
    f'if ! {{ {_step("-", "$o")}; }}; then mv "$s.undo" "$s"; exit 1; fi; '
    'if [ -n "$u" ]; then systemctl start $u; fi; '
    'rm -f "$s.undo"'
)


@dataclass
class ClockSkew(_HostFault):
    """Step a host's clock (or one unit's, libfaketime) by offset_s; revert steps it back."""

    kind: ClassVar[str] = "clock-skew"
    offset_s: int = 120
    unit: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        off: object = self.offset_s
        if isinstance(off, float) and off.is_integer():
            self.offset_s = off = int(off)
        if isinstance(off, bool) or not isinstance(off, int) or not 1 <= abs(off) <= MAX_OFFSET_S:
            raise ParameterError(
                f"clock-skew offset_s must be a whole number of seconds with 1 <= |offset_s| "
                f"<= {MAX_OFFSET_S}, got {off!r}"
            )
        if self.unit:
            if not set(self.unit) <= _UNIT_CHARS or "." not in self.unit:
                raise ParameterError(
                    f"clock-skew unit must be a systemd unit name (e.g. ledger.service), "
                    f"got {self.unit!r}"
                )
            if self.unit.startswith(GO_UNITS):
                raise ParameterError(
                    f"clock-skew cannot skew {self.unit} with libfaketime: a Go program reads "
                    "the clock without libc; skew the whole host (no unit) on a real host"
                )
        elif self.inv.is_lab:
            raise UsageError(
                "clock-skew of a whole host cannot be real in the lab: every lab host reads "
                "the controller's kernel clock (CLOCK_REALTIME has no namespace) and "
                "systemd-nspawn grants no CAP_SYS_TIME; give unit=… to skew one service "
                "with libfaketime (Debian's faketime, which the lab image must carry)"
            )

    def describe(self) -> str:
        what = f"{self.unit} on {self.target}" if self.unit else self.target
        return f"clock-skew {self.offset_s:+d} s of {what}"

    @property
    def dropin(self) -> str:
        return f"/run/systemd/system/{self.unit}.d/{DROPIN_NAME}"

    # ------------------------------------------------------------- scripts
    def inject_command(self) -> str:
        if self.unit:
            return self._unit_inject()
        units = " ".join(TIME_SYNC_UNITS)
        return (
            f"s={CLOCK_STATE}; "
            'if [ -e "$s" ]; then echo "a clock skew is already in effect ($(cat "$s"))" >&2; '
            f"exit {REFUSED_RC}; fi; "
            f'u=""; for x in {units}; do if systemctl is-active -q "$x"; then u="$u $x"; fi; done; '
            # The state file comes first (the timer's undo acts on it only); until the
            # clock is stepped, a failure takes it back so that nothing steps back a
            # clock that never moved.
            f'echo "{self.offset_s}$u" > "$s" || exit 1; '
            f"{self._arm_revert('clock', CLOCK_UNDO)}; "
            'back() { rm -f "$s"; if [ -n "$u" ]; then systemctl start $u; fi; exit 1; }; '
            'if [ -n "$u" ]; then systemctl stop $u || back; fi; '
            f"o={self.offset_s}; {{ {_step('+', '$o')}; }} || back; "
            "date +%s.%N"
        )

    def _unit_inject(self) -> str:
        unit = shlex.quote(self.unit)
        d = shlex.quote(f"/run/systemd/system/{self.unit}.d")
        f = shlex.quote(self.dropin)
        return (
            'lib=""; '
            f'for x in {FAKETIME_LIBS}; do if [ -r "$x" ]; then lib="$x"; break; fi; done; '
            'if [ -z "$lib" ]; then echo "libfaketime is not installed on this host '
            f'(Debian package faketime)" >&2; exit {REFUSED_RC}; fi; '
            f"if ! systemctl is-active -q {unit}; then "
            f'echo "{self.unit} is not running: nothing to skew" >&2; exit {REFUSED_RC}; fi; '
            f"{self._arm_revert('clock', self._unit_undo())}; "
            f"mkdir -p {d} && printf '%s\\n' '[Service]' "
            f'"Environment=\\"LD_PRELOAD=$lib\\" \\"FAKETIME={self.offset_s:+d}\\" '
            f'\\"DONT_FAKE_MONOTONIC=1\\"" > {f} || exit 1; '
            f"systemctl daemon-reload && systemctl restart {unit} || exit 1; "
            # A unit that starts and then dies under libfaketime (bookworm's 0.9.10 and
            # Python 3.11's clock_nanosleep: EINVAL, libfaketime#426) is no skew: revert.
            f"sleep {UNIT_SETTLE_S}; if ! systemctl is-active -q {unit}; then "
            f"{self._unit_undo()}; {self._disarm_revert('clock')}; "
            f'echo "{self.unit} stopped within {UNIT_SETTLE_S} s of its restart under '
            'libfaketime (reverted): its clock cannot be skewed this way" >&2; '
            f"exit {REFUSED_RC}; fi"
        )

    def _unit_undo(self) -> str:
        f = shlex.quote(self.dropin)
        unit = shlex.quote(self.unit)
        return (
            # restart, not try-restart: the unit ran when it was skewed, and one that
            # died under libfaketime must come back too
            f"if [ -e {f} ]; then rm -f {f}; systemctl daemon-reload; "
            f"systemctl reset-failed {unit} 2>/dev/null; systemctl restart {unit}; fi"
        )

    def revert_command(self) -> str:
        undo = self._unit_undo() if self.unit else CLOCK_UNDO
        return f"{self._disarm_revert('clock')}; {undo}"

    # ------------------------------------------------------------ actions
    def _inject(self) -> None:
        t0 = time.time()
        out = self._script(self.inject_command(), timeout=60).split()
        t1 = time.time()
        if self.unit:
            self.detail = f"{self.describe()}: restarted with FAKETIME={self.offset_s:+d}"
            return
        try:
            skew = float(out[-1]) - (t0 + t1) / 2
            self.detail = f"{self.describe()}: now {skew:+.1f} s from the controller's clock"
        except (IndexError, ValueError):
            self.detail = self.describe()

    def _revert(self) -> None:
        self._script(self.revert_command(), timeout=60)

    def in_effect(self) -> bool:
        mark = shlex.quote(self.dropin if self.unit else CLOCK_STATE)
        return self._script(f"if [ -e {mark} ]; then echo skewed; fi").strip() == "skewed"

    def _settle(self) -> None:
        self._script(self._disarm_revert("clock"))

    def _clear_state(self) -> str:
        return f"no skew drop-in for {self.unit}" if self.unit else f"no {CLOCK_STATE}"

    def _reverted_state(self) -> str:
        if self.unit:
            return f"{self.unit} restarted on the host's clock"
        return "clock stepped back, time synchronisation started again"


faults.register(DiskFull)
faults.register(ClockSkew)
