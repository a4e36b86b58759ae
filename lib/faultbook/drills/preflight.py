"""Pre-flight: prove what a drill's procedure depends on, before any fault or load.

A drill that injects a fault and then finds it cannot detect it (Prometheus
down, its alert rule missing), reach a host, or rejoin from backups leaves
the stack worse than it found it. ``check`` proves each dependency and
``Report.require`` stops the drill with one line (``PreflightFailed``, exit 1)
when one is broken::

    preflight.check(inv, alert="NoWritablePrimary", hosts=["db1", "db2"], backups=True).require()

``Procedure.preflight`` calls it (and ``Procedure.start_load``/``inject`` call
that with the runbook's defaults, ``NEEDS``, when the notebook did not).

Checks, in order:

- ``prometheus``: Prometheus on at least one host of group ``mon`` answers its
  API (``/api/v1/rules``): the mon hosts are redundant, so one down is named
  in the detail but refuses nothing (it fires its own alert);
- ``alert``: a loaded alerting rule has that ``alertname`` and its last
  evaluation did not fail;
- ``ssh``: every host named answers a command over SSH (host key checked);
- ``backups``: the pgBackRest repository lists at least one backup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from faultbook import ssh
from faultbook.errors import FaultbookError, PreflightFailed
from faultbook.inventory import Inventory

MAX_REASON_CHARS = 400


@dataclass(frozen=True)
class Needs:
    """What one runbook's drill depends on (groups are expanded to their hosts)."""

    alert: str | None = None
    groups: tuple[str, ...] = ()
    backups: bool = False
    prometheus: bool = True


# The drills' dependencies. Prometheus everywhere: each drill ends on steady state,
# which reads the alerts. db-failover waits for NoWritablePrimary and its rejoin may
# re-clone the old primary from the repository.
NEEDS: dict[str, Needs] = {
    "db-failover": Needs(
        alert="NoWritablePrimary", groups=("db", "backup", "web", "lb"), backups=True
    ),
    "web-node-failure": Needs(groups=("web", "lb", "db")),
    "lb-failover": Needs(groups=("lb", "web", "db")),
}
DEFAULT_NEEDS = Needs(groups=("lb", "web", "db"))


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def reason(self) -> str:
        """One line: every failed check, or what was proven."""
        bad = [c.detail for c in self.checks if not c.ok]
        return _one_line("; ".join(bad) if bad else "; ".join(c.detail for c in self.checks))

    def require(self) -> Report:
        """Raise PreflightFailed with one line unless every check passed."""
        if not self.ok:
            raise PreflightFailed(f"pre-flight: {self.reason}; nothing injected")
        return self

    def __str__(self) -> str:
        return ("pre-flight ok: " if self.ok else "pre-flight failed: ") + self.reason


def hosts_of(inv: Inventory, groups: Iterable[str]) -> list[str]:
    """The hosts of GROUPS that the inventory has, in inventory order, each once."""
    out: list[str] = []
    for g in groups:
        if g not in inv.groups:
            continue
        out += [h.name for h in inv.group(g) if h.name not in out]
    return out


def _rules(inv: Inventory, host: str) -> list[dict[str, Any]]:
    from faultbook.stack import monitoring

    data = monitoring.api(inv, "/api/v1/rules", {"type": "alert"}, timeout=5.0, host=host)
    return [r for g in (data or {}).get("groups") or [] for r in g.get("rules") or []]


BRIEF = 90  # characters of one mon host's reason in a refusal


def _one_line(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """TEXT on one line (whitespace runs squeezed), cut to LIMIT characters with "…"."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_prometheus(inv: Inventory, alert: str | None) -> list[Check]:
    if "mon" not in inv.groups or not inv.group("mon"):
        return [Check("prometheus", False, f"{inv.path} has no host in group mon: no Prometheus")]
    checks: list[Check] = []
    rules: list[dict[str, Any]] | None = None
    up: list[str] = []
    down: list[str] = []
    for h in inv.group("mon"):
        try:
            got = _rules(inv, h.name)
        except FaultbookError as exc:
            # each reason kept short, so that the one-line refusal names every mon host
            why = _one_line(str(exc), BRIEF)
            down.append(f"Prometheus on {h.name} ({h.address}) does not answer: {why}")
            continue
        up.append(h.name)
        rules = got if rules is None else rules
    if up:
        detail = f"Prometheus on {', '.join(up)} answers"
        checks.append(Check("prometheus", True, "; ".join([detail, *down])))
    else:
        checks.append(Check("prometheus", False, "; ".join(down)))
    if alert and rules is not None:
        found = [r for r in rules if r.get("name") == alert]
        if not found:
            names = sorted({str(r.get("name")) for r in rules})
            checks.append(
                Check(
                    "alert",
                    False,
                    f"Prometheus has no alerting rule {alert!r} loaded (it has "
                    f"{', '.join(names) or 'none'}): the drill could not detect its fault",
                )
            )
        elif any(r.get("health") == "err" for r in found):
            err = next(str(r.get("lastError")) for r in found if r.get("health") == "err")
            checks.append(Check("alert", False, f"alert rule {alert!r} fails to evaluate: {err}"))
        else:
            checks.append(Check("alert", True, f"alert rule {alert} loaded"))
    return checks


def check_ssh(inv: Inventory, hosts: Sequence[str], timeout: float = 8.0) -> Check:
    if not hosts:
        return Check("ssh", True, "no host to reach")
    res = ssh.run_many(inv, list(hosts), "true", timeout=timeout)
    bad = []
    for host, r in res.items():
        if isinstance(r, FaultbookError):
            bad.append(str(r))
        elif not r.ok:
            bad.append(f"{host}: `true` exited {r.rc}")
    if bad:
        return Check("ssh", False, "cannot reach over SSH: " + "; ".join(bad))
    return Check("ssh", True, f"{len(hosts)} hosts answer over SSH")


def check_backups(inv: Inventory) -> Check:
    from faultbook.backup import repository

    try:
        df = repository.backups(repository.info(inv), repository.stanza_name(inv))
    except FaultbookError as exc:
        return Check("backups", False, f"the backup repository cannot be read: {exc}")
    if len(df) == 0:
        return Check(
            "backups",
            False,
            f"the repository on {repository.repo_host(inv)} holds no backup: a rejoin "
            "that must re-clone the old primary would fail",
        )
    return Check("backups", True, f"{len(df)} backups in the repository")


def check(
    inv: Inventory,
    *,
    alert: str | None = None,
    hosts: Sequence[str] = (),
    backups: bool = False,
    prometheus: bool = True,
) -> Report:
    """Prove each dependency; never raises for a broken one (see ``Report``)."""
    checks: list[Check] = []
    if prometheus or alert:
        checks += check_prometheus(inv, alert)
    for h in hosts:
        inv.host(h)  # an unknown host is a usage error, not a failed check
    checks.append(check_ssh(inv, hosts))
    if backups:
        checks.append(check_backups(inv))
    return Report(checks)
