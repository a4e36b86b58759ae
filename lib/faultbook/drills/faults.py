"""The fault catalogue: each fault can be injected and reverted, and records when.

| kind            | how                                                     | needs the lab |
|-----------------|---------------------------------------------------------|---------------|
| host-crash      | SIGKILL the host's machine (power loss); revert boots it | yes           |
| service-kill    | ``systemctl kill --signal=SIGKILL UNIT`` over SSH        | no            |
| service-stop    | ``systemctl stop UNIT`` over SSH; revert starts it       | no            |
| process-freeze  | SIGSTOP every process of UNIT, revert SIGCONT            | no            |
| partition       | lab: cut the host's link; real hosts: an nftables table  | no            |
|                 | dropping everything but the controller's SSH session     |               |
| delay-loss      | lab: userspace netem on the host's link; real hosts: tc  | no            |
| disk-full       | fill a data filesystem to leave_mib (``hostfaults``)     | no            |
| clock-skew      | step a host's clock, or one unit's (``hostfaults``)      | no            |
| exposed-listener| a test listener and a firewall hole for it (``listener``)| no            |
| path-cut        | nftables inside a host drops its traffic with PEERS (``pathcut``) | no     |

service-stop, process-freeze, disk-full and clock-skew (everywhere), and
partition and delay-loss on real hosts, arm a transient systemd timer on the
target that reverts them by itself after ``max_s`` seconds, so a drill that
dies half-way never leaves a host stopped, partitioned, frozen, full or skewed
for good. service-kill needs none (systemd restarts the unit or it stays dead);
lab link faults are reverted by ``faultbook lab heal|boot`` (and ``lab down``),
and, for a drill, by the journal's rollback and watchdog (``drills.journal``,
``drills.watchdog``).

Every fault can be rebuilt from what a journal records (``kind``, ``target``,
``spec()``, the inventory's path): ``make(kind, inv, target, **spec)``, so
another process can revert it. ``rollback()`` probes whether the fault still
holds (``in_effect()``) and reverts it only then: safe on a fault that was
never injected by this object, or already reverted by someone else.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from faultbook import ssh
from faultbook.errors import FaultbookError, FaultError, ParameterError, UsageError
from faultbook.inventory import Inventory
from faultbook.results import iso

log = logging.getLogger(__name__)

# The nftables table a partition adds on a real host (deleted on revert).
PARTITION_TABLE = "faultbook_partition"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Fault:
    """Base class. Subclasses set ``kind`` and implement ``_inject``/``_revert``."""

    kind: ClassVar[str] = ""
    needs_lab: ClassVar[bool] = False
    # Acts through a lab primitive (link cut, userspace netem) when the inventory is the lab.
    lab_primitive: ClassVar[bool] = False
    reverts_itself: ClassVar[bool] = False
    # A row of the game day's fault x tier matrix (suites.gameday): a fault that hurts
    # availability. False for the security audit's drill, which opens something instead.
    game_day: ClassVar[bool] = True

    inv: Inventory
    target: str
    max_s: float = 600.0
    injected_at: datetime | None = None
    reverted_at: datetime | None = None
    detail: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.inv.host(self.target)  # InventoryError for a host that is not in the inventory
        if self.needs_lab and not self.inv.is_lab:
            raise UsageError(
                f"fault {self.kind!r} needs the lab (it acts on the machine, not over SSH); "
                f"inventory {self.inv.name!r} is not the lab — use "
                + ", ".join(k for k, c in CATALOGUE.items() if not c.needs_lab and c.game_day)
            )
        if not 0 < self.max_s <= 3600:
            raise ParameterError(f"fault max_s must be in (0, 3600] seconds, got {self.max_s!r}")

    # ------------------------------------------------------------------ public
    def prepare(self) -> None:
        """Called before the fault is journaled: note what a rollback must restore."""

    def inject(self) -> None:
        if self.injected_at is not None and self.reverted_at is None:
            raise FaultError(f"{self.describe()} is already injected")
        log.info("injecting %s", self.describe())
        self._inject()
        self.injected_at = _now()
        self.reverted_at = None

    def revert(self) -> None:
        """Undo the fault. Safe to call twice, or when it was never injected."""
        if self.injected_at is None or self.reverted_at is not None:
            return
        log.info("reverting %s", self.describe())
        self._revert()
        self.reverted_at = _now()

    def describe(self) -> str:
        return f"{self.kind} on {self.target}"

    @property
    def lab_side(self) -> bool:
        """Injected and reverted on the controller (the lab's primitives), not on the host.

        Nothing on the host reverts these by itself: a drill's watchdog does
        (``drills.watchdog``).
        """
        return self.needs_lab or (self.lab_primitive and self.inv.is_lab)

    def spec(self) -> dict[str, Any]:
        """The options that rebuild this fault: ``make(kind, inv, target, **spec())``."""
        base = {f.name for f in fields(Fault)}
        out: dict[str, Any] = {"max_s": self.max_s}
        for f in fields(self):
            if f.name not in base:
                out[f.name] = getattr(self, f.name)
        return out

    def in_effect(self) -> bool:
        """Whether the fault holds right now, probed on the lab or the host (not remembered)."""
        raise NotImplementedError

    def rollback(self) -> tuple[str, str]:
        """Revert the fault if it still holds: ("reverted"|"already reverted", detail).

        Unlike ``revert()`` this does not rely on this object having injected
        the fault: it asks the lab or the host, so it is safe from another
        process (a journal's rollback) and when someone else already reverted
        it. Raises FaultError (or the lab's/SSH's error) when the revert fails
        or the fault still holds afterwards.
        """
        if not self.in_effect():
            self._settle()
            self.reverted_at = self.reverted_at or _now()
            return "already reverted", f"{self.describe()}: {self._clear_state()}"
        log.info("rolling back %s", self.describe())
        self._revert()
        if self.in_effect():
            raise FaultError(f"{self.describe()}: still in effect after its revert")
        self.reverted_at = _now()
        return "reverted", f"{self.describe()}: {self._reverted_state()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "injected_at": iso(self.injected_at) if self.injected_at else None,
            "reverted_at": iso(self.reverted_at) if self.reverted_at else None,
            "detail": self.detail or self.describe(),
        }

    # ------------------------------------------------------------- internals
    def _inject(self) -> None:
        raise NotImplementedError

    def _revert(self) -> None:
        raise NotImplementedError

    def _settle(self) -> None:
        """Tidy up after a fault found already reverted (e.g. disarm a revert timer)."""

    def _clear_state(self) -> str:
        return "not in effect"

    def _reverted_state(self) -> str:
        return "reverted"

    def _lab(self) -> Any:
        from faultbook.lab.lab import Lab  # the lab is only needed by lab faults

        return Lab(self.inv)

    def _ssh(self, command: str, timeout: float = 20.0) -> str:
        r = ssh.run(self.inv, self.target, command, timeout=timeout, sudo=True)
        if not r.ok:
            raise FaultError(
                f"{self.describe()}: `{command}` failed (rc={r.rc}): "
                f"{(r.stderr or r.stdout).strip()[:300]}"
            )
        return r.stdout

    def _arm_revert(self, name: str, command: str) -> str:
        """A transient systemd timer on the target that runs COMMAND after max_s."""
        unit = f"faultbook-revert-{name}"
        return (
            f"systemctl stop {unit}.timer {unit}.service >/dev/null 2>&1; "
            f"systemctl reset-failed {unit}.service >/dev/null 2>&1; "
            f"systemd-run --quiet --unit={unit} --on-active={int(self.max_s)}s "
            f"/bin/sh -c {shlex.quote(command)}"
        )

    def _disarm_revert(self, name: str) -> str:
        unit = f"faultbook-revert-{name}"
        return f"systemctl stop {unit}.timer >/dev/null 2>&1 || true"

    def _powered_off(self) -> bool:
        """A lab host whose machine is not running (a power-off ended all its processes)."""
        return self.inv.is_lab and self._lab().pid(self.target) is None


# Services a rollback does not start again after a boot: transient or per-login units.
_NOT_RESTARTED = ("faultbook-revert-", "user@", "user-runtime-dir@", "session-")


@dataclass
class HostCrash(Fault):
    """Power loss: the whole machine dies at once. Revert boots it, disk intact.

    ``units``: the services that ran before the crash (``prepare`` lists them
    over SSH). A drill's own revert only boots the host (its procedure decides
    what runs on it, e.g. a rejoin); a rollback (``rollback()``) also starts
    those of them that did not come back by themselves, through systemd, so a
    unit's own guards (PostgreSQL's start guard) still apply.
    """

    kind: ClassVar[str] = "host-crash"
    needs_lab: ClassVar[bool] = True
    units: list[str] = field(default_factory=list)

    def prepare(self) -> None:
        if self.units:
            return
        try:
            out = self._ssh(
                "systemctl list-units --type=service --state=running --no-legend --plain", 10
            )
        except FaultbookError as exc:
            log.warning("%s: cannot list its running services (%s)", self.describe(), exc)
            return
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        self.units = [
            u
            for u in names
            if u.endswith(".service")
            and not u.startswith(_NOT_RESTARTED)
            and not any(c in u for c in " ;|&$`'\"\n")
        ]

    def _inject(self) -> None:
        self._lab().crash(self.target)

    def _revert(self) -> None:
        self._lab().boot(self.target)  # waits until ready; a running host only waits

    def in_effect(self) -> bool:
        return self._lab().pid(self.target) is None

    def rollback(self) -> tuple[str, str]:
        outcome, detail = super().rollback()
        if outcome == "reverted" and self.units:
            detail += "; " + self._start_units()
        return outcome, detail

    def _start_units(self) -> str:
        """Start the services that ran before the crash and did not come back at boot."""
        script = (
            f"for u in {' '.join(shlex.quote(u) for u in self.units)}; do "
            'systemctl is-active -q "$u" && continue; '
            'if systemctl start "$u" 2>/dev/null; then echo "started $u"; '
            'else echo "FAILED $u: $(systemctl show -P Result "$u")"; fi; done'
        )
        try:
            out = self._ssh(script, 120).split("\n")
        except FaultbookError as exc:
            return f"its services were not started: {exc}"
        started = [ln.split(" ", 1)[1] for ln in out if ln.startswith("started ")]
        failed = [ln.split(" ", 1)[1] for ln in out if ln.startswith("FAILED ")]
        parts = []
        if started:
            parts.append("started " + ", ".join(started))
        if failed:
            parts.append("did not start: " + "; ".join(failed))
        return "; ".join(parts) or "its services came back at boot"

    def _clear_state(self) -> str:
        return f"{self.target} is running"

    def _reverted_state(self) -> str:
        return f"{self.target} booted (disk intact) and ready"


@dataclass
class _UnitFault(Fault):
    unit: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.unit or any(c in self.unit for c in " ;|&$`'\"\n"):
            raise ParameterError(
                f"fault {self.kind!r} needs a systemd unit name (e.g. ledger.service), "
                f"got {self.unit!r}"
            )

    def describe(self) -> str:
        return f"{self.kind} of {self.unit} on {self.target}"

    def in_effect(self) -> bool:
        state = self._ssh(f"systemctl is-active {self.unit} || true").strip()
        return state != "active"

    def _clear_state(self) -> str:
        return f"{self.unit} is active"

    def _reverted_state(self) -> str:
        return f"{self.unit} started"


@dataclass
class ServiceKill(_UnitFault):
    """SIGKILL every process of a unit; systemd's Restart= policy may bring it back."""

    kind: ClassVar[str] = "service-kill"

    def _inject(self) -> None:
        self._ssh(f"systemctl kill --signal=SIGKILL {self.unit}")

    def _revert(self) -> None:
        self._ssh(f"systemctl start {self.unit}")


@dataclass
class ServiceStop(_UnitFault):
    """A clean stop of the unit; revert starts it again."""

    kind: ClassVar[str] = "service-stop"

    def _inject(self) -> None:
        self._ssh(
            f"{self._arm_revert('stop', f'systemctl start {self.unit}')}; "
            f"systemctl stop {self.unit}"
        )

    def _revert(self) -> None:
        self._ssh(f"{self._disarm_revert('stop')}; systemctl start {self.unit}")

    def _settle(self) -> None:
        self._ssh(self._disarm_revert("stop"))


@dataclass
class ProcessFreeze(_UnitFault):
    """SIGSTOP every process of the unit: alive to the kernel, silent to everyone."""

    kind: ClassVar[str] = "process-freeze"

    def _inject(self) -> None:
        cont = f"systemctl kill --signal=SIGCONT {self.unit}"
        self._ssh(
            f"{self._arm_revert('freeze', cont)}; systemctl kill --signal=SIGSTOP {self.unit}"
        )

    def _revert(self) -> None:
        # A lab host fenced (powered off) while frozen has no process left to resume.
        if self._powered_off():
            return
        self._ssh(f"{self._disarm_revert('freeze')}; systemctl kill --signal=SIGCONT {self.unit}")

    def in_effect(self) -> bool:
        if self._powered_off():
            return False
        # A process of the unit in state T (stopped): /proc/PID/stat's field after "(comm)".
        # The unit's cgroup: unified (cgroup v2), or the v1/hybrid layouts' hierarchies.
        probe = (
            f"cg=$(systemctl show -P ControlGroup {self.unit}); n=0; f=; "
            "for b in /sys/fs/cgroup /sys/fs/cgroup/unified /sys/fs/cgroup/systemd; do "
            '[ -n "$cg" ] && [ -r "$b$cg/cgroup.procs" ] && { f="$b$cg/cgroup.procs"; break; }; '
            'done; [ -n "$f" ] && for p in $(cat "$f"); do '
            "s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null | cut -d' ' -f1); "
            '[ "$s" = T ] && n=$((n+1)); done; echo $n'
        )
        return int(self._ssh(probe).strip() or 0) > 0

    def _settle(self) -> None:
        if not self._powered_off():
            self._ssh(self._disarm_revert("freeze"))

    def _clear_state(self) -> str:
        if self._powered_off():
            return f"{self.target} is powered off: no process of {self.unit} is left"
        return f"no process of {self.unit} is stopped"

    def _reverted_state(self) -> str:
        return f"{self.unit} resumed (SIGCONT)"


def partition_ruleset(controller: str) -> str:
    """nftables table that drops all traffic except SSH with the controller (and loopback)."""
    t = PARTITION_TABLE
    return (
        f"table inet {t} {{\n"
        "  chain input {\n"
        "    type filter hook input priority -200; policy drop;\n"
        '    iif "lo" accept\n'
        f"    ip saddr {controller} tcp dport 22 accept\n"
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority -200; policy drop;\n"
        '    oif "lo" accept\n'
        f"    ip daddr {controller} tcp sport 22 accept\n"
        "  }\n"
        "}\n"
    )


@dataclass
class Partition(Fault):
    """Cut the host off the network. In the lab its link is cut (SSH too).

    On real hosts an nftables table drops everything except the controller's
    SSH, whose address is read from the session's SSH_CLIENT.
    """

    kind: ClassVar[str] = "partition"
    lab_primitive: ClassVar[bool] = True

    def _inject(self) -> None:
        if self.inv.is_lab:
            self._lab().partition(self.target)
            return
        controller = self._ssh("echo ${SSH_CLIENT%% *}").strip()
        if not controller:
            raise FaultError(f"{self.describe()}: cannot tell the controller's address")
        rules = partition_ruleset(controller)
        undo = f"nft delete table inet {PARTITION_TABLE}"
        self._ssh(
            f"{self._arm_revert('partition', undo)}; "
            f"nft delete table inet {PARTITION_TABLE} 2>/dev/null; "
            f"printf %s {shlex.quote(rules)} | nft -f -"
        )

    def _revert(self) -> None:
        if self.inv.is_lab:
            lab = self._lab()
            if lab.pid(self.target) is not None:  # a powered-off host gets a new link at boot
                lab.heal(self.target)
            return
        self._ssh(
            f"{self._disarm_revert('partition')}; "
            f"nft delete table inet {PARTITION_TABLE} 2>/dev/null || true"
        )

    def in_effect(self) -> bool:
        if self.inv.is_lab:
            lab = self._lab()
            if lab.pid(self.target) is None:
                return False  # powered off: its link is gone, a boot makes a new one
            from faultbook.lab import net

            return net.link_state(self.target, lab.bridge) != "up"
        out = self._ssh(
            f"nft list table inet {PARTITION_TABLE} >/dev/null 2>&1 && echo cut || true"
        )
        return out.strip() == "cut"

    def _settle(self) -> None:
        if not self.inv.is_lab:
            self._ssh(self._disarm_revert("partition"))

    def _clear_state(self) -> str:
        if self.inv.is_lab and self._lab().pid(self.target) is None:
            return f"{self.target} is powered off (a boot attaches a new link)"
        return f"{self.target}'s link is up" if self.inv.is_lab else "no partition table"

    def _reverted_state(self) -> str:
        return "link re-attached" if self.inv.is_lab else f"table {PARTITION_TABLE} deleted"


@dataclass
class DelayLoss(Fault):
    """Delay and drop the packets the host sends (netem)."""

    kind: ClassVar[str] = "delay-loss"
    lab_primitive: ClassVar[bool] = True
    delay_ms: float = 200.0
    loss_pct: float = 0.0
    interface: str = "eth0"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.delay_ms <= 60_000 and 0 <= self.loss_pct <= 100):
            raise ParameterError(
                f"delay-loss needs 0 <= delay_ms <= 60000 and 0 <= loss_pct <= 100, "
                f"got delay_ms={self.delay_ms!r}, loss_pct={self.loss_pct!r}"
            )

    def describe(self) -> str:
        return f"delay-loss {self.delay_ms:g} ms / {self.loss_pct:g} % on {self.target}"

    def _inject(self) -> None:
        if self.inv.is_lab:
            self._lab().netem(self.target, self.delay_ms, self.loss_pct)
            return
        dev = shlex.quote(self.interface)
        undo = f"tc qdisc del dev {dev} root"
        self._ssh(
            f"{self._arm_revert('netem', undo)}; tc qdisc replace dev {dev} root netem "
            f"delay {self.delay_ms:g}ms loss {self.loss_pct:g}%"
        )

    def _revert(self) -> None:
        if self.inv.is_lab:
            self._lab().heal(self.target)
            return
        dev = shlex.quote(self.interface)
        self._ssh(
            f"{self._disarm_revert('netem')}; tc qdisc del dev {dev} root 2>/dev/null || true"
        )

    def in_effect(self) -> bool:
        if self.inv.is_lab:
            lab = self._lab()
            return lab.pid(self.target) is not None and lab.netem_state(self.target) is not None
        dev = shlex.quote(self.interface)
        out = self._ssh(f"tc qdisc show dev {dev} root 2>/dev/null || true")
        return "netem" in out

    def _settle(self) -> None:
        if not self.inv.is_lab:
            self._ssh(self._disarm_revert("netem"))

    def _clear_state(self) -> str:
        return "no delay or loss"

    def _reverted_state(self) -> str:
        return "delay and loss cleared"


CATALOGUE: dict[str, type[Fault]] = {
    cls.kind: cls
    for cls in (HostCrash, ServiceKill, ServiceStop, ProcessFreeze, Partition, DelayLoss)
}


def register(cls: type[Fault]) -> type[Fault]:
    """Add a fault class defined in another module (``drills.hostfaults``) to CATALOGUE."""
    CATALOGUE[cls.kind] = cls
    return cls


def make(kind: str, inv: Inventory, target: str, **options: Any) -> Fault:
    """Build a fault from the catalogue; bad kind, host or option is a one-line UsageError."""
    cls = CATALOGUE.get(kind)
    if cls is None:
        raise ParameterError(f"unknown fault {kind!r}; expected one of {', '.join(CATALOGUE)}")
    try:
        return cls(inv, target, **options)
    except TypeError as exc:
        raise ParameterError(f"fault {kind!r}: {exc}") from None


def require_kind(kind: str, allowed: tuple[str, ...] | None = None) -> str:
    """Check a runbook's fault parameter before anything runs (one-line ParameterError)."""
    choices = allowed or tuple(CATALOGUE)
    if kind not in choices:
        raise ParameterError(f"fault must be one of {', '.join(choices)}, got {kind!r}")
    return kind


def catalogue_table() -> list[dict[str, Any]]:
    return [
        {"fault": k, "needs_lab": c.needs_lab, "what": (c.__doc__ or "").strip().splitlines()[0]}
        for k, c in CATALOGUE.items()
    ]


# disk-full and clock-skew (a host's own disk and clock), the security audit's
# exposed-listener and triage's path-cut register themselves here; modules of their
# own keep this one small. Imported last: they subclass Fault.
from faultbook.drills import hostfaults as _hostfaults  # noqa: E402,F401
from faultbook.drills import listener as _listener  # noqa: E402,F401
from faultbook.drills import pathcut as _pathcut  # noqa: E402,F401
