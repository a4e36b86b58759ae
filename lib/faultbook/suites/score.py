"""The reliability score: how recently each drill passed, per tier and overall.

Gremlin's model: each drill scores by its latest run —

==========================  =====
latest run                  score
==========================  =====
passed within RECENT_DAYS   100
passed longer ago (stale)   75
failed                      50
never run                   0
==========================  =====

— a tier's score is the mean of its drills' scores and the overall score the
mean of the tiers' (each tier weighs the same, however many drills it has).
"Recently" is ``RECENT_DAYS`` = 7 days by default (``faultbook history
--recent-days``): the nightly suite runs every drill daily, the smoke suite one
per tier, so a week without a pass means the schedule stopped or the drill is
being skipped.

A *drill* is a runbook in drill mode with its fault (``db-failover/host-crash``),
a planned operation (``db-failover/switchover``) or a backup-restore drill
(``backup-restore/pitr``); the catalogue is every fault the runbooks declare
(``drills.steps.DRILLS``) and every backup-restore mode. Incident runs and the
health check are listed in the history but are not drills.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from faultbook.drills.steps import DRILLS, RESTORE_MODES

RECENT_DAYS = 7.0
SCORES = {"recent": 100, "stale": 75, "failed": 50, "never": 0}
TIERS = {
    "web-node-failure": "web",
    "db-failover": "database",
    "lb-failover": "load balancer",
    "backup-restore": "backup",
}


@dataclass(frozen=True)
class Drill:
    key: str
    runbook: str
    tier: str


def catalogue() -> list[Drill]:
    """Every drill the runbooks can run, in a stable order."""
    out = []
    for runbook, spec in DRILLS.items():
        if runbook not in TIERS:
            continue  # fault-observe: the game day's matrix shows it, not a tier's score
        out += [Drill(f"{runbook}/{f}", runbook, TIERS[runbook]) for f in spec.faults]
        out += [
            Drill(f"{runbook}/{m}", runbook, TIERS[runbook])
            for m in spec.modes
            if m not in ("incident", "drill")
        ]
    out += [
        Drill(f"backup-restore/{m}", "backup-restore", TIERS["backup-restore"])
        for m in RESTORE_MODES
    ]
    return out


def drill_key(doc: Mapping[str, Any]) -> str | None:
    """The drill a result.json is a run of, or None (an incident, the health check)."""
    runbook = doc.get("runbook")
    params = doc.get("parameters") or {}
    mode = params.get("mode", doc.get("mode"))
    if runbook == "backup-restore":
        return f"backup-restore/{mode}" if params.get("drill") is True else None
    if runbook not in DRILLS or doc.get("mode") != "drill":
        return None
    if mode not in (None, "drill"):
        return f"{runbook}/{mode}"  # a planned operation (switchover)
    fault = (doc.get("fault") or {}).get("kind") or params.get("fault")
    return f"{runbook}/{fault}" if fault else None


@dataclass(frozen=True)
class DrillScore:
    drill: Drill
    status: str  # recent | stale | failed | never
    runs: int = 0
    last_at: datetime | None = None
    last_verdict: str | None = None

    @property
    def score(self) -> int:
        return SCORES[self.status]


@dataclass(frozen=True)
class Scorecard:
    drills: list[DrillScore]
    tiers: dict[str, float]
    overall: float
    recent_days: float
    at: datetime


def score(
    runs: Iterable[tuple[datetime, Mapping[str, Any]]],
    now: datetime | None = None,
    recent_days: float = RECENT_DAYS,
) -> Scorecard:
    """The scorecard of RUNS (their start time and result.json) at NOW."""
    now = now or datetime.now(UTC)
    latest: dict[str, tuple[datetime, str | None]] = {}
    counts: dict[str, int] = {}
    for at, doc in runs:
        key = drill_key(doc)
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        if key not in latest or at >= latest[key][0]:
            latest[key] = (at, doc.get("verdict"))
    horizon = now - timedelta(days=recent_days)
    scored = []
    for d in catalogue():
        if d.key not in latest:
            scored.append(DrillScore(d, "never"))
            continue
        at, verdict = latest[d.key]
        status = "failed" if verdict != "pass" else ("recent" if at >= horizon else "stale")
        scored.append(DrillScore(d, status, counts[d.key], at, verdict))
    tiers: dict[str, list[int]] = {}
    for s in scored:
        tiers.setdefault(s.drill.tier, []).append(s.score)
    means = {t: sum(v) / len(v) for t, v in tiers.items()}
    overall = sum(means.values()) / len(means) if means else 0.0
    return Scorecard(scored, means, overall, recent_days, now)
