"""What the audit found: one row per check and host, with severity, evidence and a fix.

Severities, from the verdict's point of view:

- ``high``: an exposure or a weakness someone can use now (a port no flow
  declares, a failing SSH algorithm, TLS below 1.2, a secret in a log, a
  world-readable key, an app role that can drop tables). The verdict fails.
- ``medium``: drift that weakens a layer of defence but is not reachable by
  itself (a listener bound to every address behind the firewall, a declared
  flow whose service does not answer, a certificate expiring within 30 days).
- ``low``: worth knowing, no action needed soon.
- ``info``: a check that was skipped, with the reason (the hardening checks
  before ``security_hardening`` is set, pending updates in the lab).

Every row has a ``status``: ``fail`` (a finding), ``pass`` (checked, fine; the
evidence says what was seen) or ``skip``. Counts per severity count findings
and skips, never passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import pandas as pd

SEVERITIES = ("high", "medium", "low", "info")
STATUSES = ("fail", "pass", "skip")
COLUMNS = ["check", "host", "severity", "status", "evidence", "fix"]


@dataclass(frozen=True)
class Finding:
    check: str
    host: str
    severity: str
    evidence: str
    fix: str = ""
    status: str = "fail"

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")


def passed(check: str, host: str, evidence: str) -> Finding:
    return Finding(check, host, "info", evidence, "", "pass")


def skipped(check: str, host: str, why: str, fix: str = "") -> Finding:
    return Finding(check, host, "info", why, fix, "skip")


@dataclass
class Findings:
    """An ordered collection; ``extend`` per check, ``table()`` for the runbook."""

    rows: list[Finding] = field(default_factory=list)

    def extend(self, items: Iterable[Finding]) -> list[Finding]:
        new = list(items)
        self.rows.extend(new)
        return new

    def of(self, check: str) -> list[Finding]:
        return [f for f in self.rows if f.check == check]

    def problems(self) -> list[Finding]:
        return [f for f in self.rows if f.status != "pass"]

    def counts(self) -> dict[str, int]:
        """Findings and skips per severity (passes are not counted)."""
        out = dict.fromkeys(SEVERITIES, 0)
        for f in self.problems():
            out[f.severity] += 1
        return out

    def high(self) -> list[Finding]:
        return [f for f in self.rows if f.status == "fail" and f.severity == "high"]


def table(rows: Iterable[Finding], include_passes: bool = False) -> pd.DataFrame:
    """Findings as a DataFrame (COLUMNS), worst first; passes only when asked."""
    recs = [asdict(f) for f in rows if include_passes or f.status != "pass"]
    df = pd.DataFrame(recs, columns=COLUMNS)
    if df.empty:
        return df
    order = {s: i for i, s in enumerate(SEVERITIES)}
    status_order = {"fail": 0, "skip": 1, "pass": 2}
    df = df.assign(_s=df["severity"].map(order), _t=df["status"].map(status_order)).sort_values(
        ["_t", "_s", "check", "host"], kind="stable"
    )
    return df.drop(columns=["_s", "_t"]).reset_index(drop=True)


def summary(rows: Iterable[Finding]) -> pd.DataFrame:
    """One row per check: hosts passed, findings per severity, skipped."""
    recs: dict[str, dict[str, int | str]] = {}
    for f in rows:
        r = recs.setdefault(
            f.check, {"check": f.check, "pass": 0, **dict.fromkeys(SEVERITIES, 0), "skip": 0}
        )
        if f.status == "pass":
            r["pass"] = int(r["pass"]) + 1
        elif f.status == "skip":
            r["skip"] = int(r["skip"]) + 1
        else:
            r[f.severity] = int(r[f.severity]) + 1
    return pd.DataFrame(
        list(recs.values()), columns=["check", "pass", *SEVERITIES, "skip"]
    ).reset_index(drop=True)
