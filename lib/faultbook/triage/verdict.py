"""What triage says: the broken link, its proof, the fixes; and the words it uses.

``Diagnosis`` is what ``diagnose.diagnose`` returns: the first ``Finding`` (a link,
a sentence, the evidence lines that prove it, the ``Proposal``s that fix it, the
named one first), the other broken links under ``also``, or, when nothing is
broken, the links seen holding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faultbook.triage.evidence import MEANING, DbEvidence, Evidence, Reach, WebEvidence


@dataclass(frozen=True)
class Proposal:
    """A fix: a runbook with its parameters, or (runbook "") what a person does."""

    runbook: str
    parameters: Mapping[str, Any]
    why: str
    hand_over: bool = False
    action: str = ""  # a person's step: instead of a runbook, or before it

    def command(self) -> str:
        """What a person types: the runbook as an incident notebook (each destructive
        step asks there, naming its host), after the action when there is one."""
        if not self.runbook:
            return self.action
        params = " ".join(f"-p {k} {v}" for k, v in self.parameters.items())
        run = f"faultbook notebook {self.runbook} {params}".strip()
        return f"{self.action}, then {run}" if self.action else run

    def to_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "parameters": dict(self.parameters),
            "why": self.why,
            "hand_over": self.hand_over,
            "action": self.action,
            "command": self.command(),
        }


@dataclass(frozen=True)
class Finding:
    link: str  # the broken link, e.g. "web2 → db1:5432"
    summary: str  # one sentence: what is broken and why
    evidence: tuple[str, ...]
    proposals: tuple[Proposal, ...]


@dataclass(frozen=True)
class Diagnosis:
    symptom: str
    finding: Finding | None
    also: tuple[Finding, ...] = ()
    held: tuple[str, ...] = field(default=())  # the links seen holding (said when none broke)

    @property
    def broken(self) -> bool:
        return self.finding is not None

    @property
    def proposal(self) -> Proposal | None:
        """The runbook triage names (the first proposal), if any."""
        return self.finding.proposals[0] if self.finding and self.finding.proposals else None

    def __str__(self) -> str:
        if self.finding is None:
            return (
                f"NOTHING BROKEN: every link from the VIP to the primary holds; "
                f"the symptom ({self.symptom}) is not seen now"
            )
        f = self.finding
        lines = [f"BROKEN: {f.link}: {f.summary}"]
        lines += [f"  - {e}" for e in f.evidence]
        for i, p in enumerate(f.proposals):
            head = "fix" if i == 0 else "or"
            lines.append(f"{head}: {p.command()}  ({p.why})")
        if len(f.proposals) > 1:
            lines.append(f"{len(f.proposals)} fixes apply: choose one")
        lines += [f"also broken: {a.link}: {a.summary}" for a in self.also]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        def finding(f: Finding) -> dict[str, Any]:
            return {
                "link": f.link,
                "summary": f.summary,
                "evidence": list(f.evidence),
                "proposals": [p.to_dict() for p in f.proposals],
            }

        return {
            "symptom": self.symptom,
            "broken": self.broken,
            "finding": finding(self.finding) if self.finding else None,
            "also": [finding(a) for a in self.also],
            "held": list(self.held),
        }


# ---------------------------------------------------------------------- words (diagnose uses them)
def listed(names: Iterable[str]) -> str:
    items = list(names)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def grouped(reaches: Sequence[Reach]) -> list[str]:
    """'web1 and web3 → db1:5432: no TCP answer (…)': sources grouped by outcome."""
    by: dict[tuple[str, int, str, str], list[str]] = {}
    for r in reaches:
        by.setdefault((r.target, r.port, r.outcome, r.detail), []).append(r.source)
    out = []
    for (target, port, outcome, detail), sources in by.items():
        text = f"{listed(sources)} → {target}:{port}: {MEANING.get(outcome, outcome)}"
        out.append(f"{text} ({detail})" if detail and outcome != "answers" else text)
    return out


def lb_view(ev: Evidence, web: str) -> tuple[list[str], str]:
    """Which lbs mark WEB not UP, and a line saying so ('' when none does)."""
    marks = {lb.name: lb.servers[web] for lb in ev.lbs if web in lb.servers}
    down = [lb for lb, st in marks.items() if not _up(st)]
    if not down:
        return [], ""
    states = {marks[lb] for lb in down}
    state = states.pop() if len(states) == 1 else "not UP"
    return down, f"{listed(down)} mark{'s' if len(down) == 1 else ''} {web} {state}"


def _up(status: str) -> bool:
    return status == "UP" or status.startswith("UP ")


def web_state(w: WebEvidence) -> str:
    if not w.reachable:
        return f"{w.name} does not answer SSH ({w.error})"
    parts = []
    if w.service != "active":
        parts.append(f"ledger.service is {w.service}")
    if w.healthz != 200:
        parts.append(f"/healthz {w.healthz or 'no answer'}")
    if w.readyz != 200:
        parts.append(f"/readyz {w.readyz}: {w.readyz_reason}" if w.readyz else "/readyz no answer")
    return f"{w.name}: " + "; ".join(parts) if parts else f"{w.name}: ready"


def db_state(d: DbEvidence) -> str:
    if not d.reachable:
        return f"{d.name} does not answer SSH ({d.error})"
    if d.role == "no answer":
        return f"{d.name}: PostgreSQL ({d.unit}) gives psql no answer ({d.sql_error})"
    if d.role == "down":
        return f"{d.name}: PostgreSQL is {d.unit}: {d.sql_error}"
    return f"{d.name}: {d.role}, PostgreSQL {d.unit}"
