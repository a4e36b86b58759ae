"""Every failed node of a tier in one run: web nodes and load balancers.

An incident rarely breaks exactly one node. The web-node-failure and lb-failover
runbooks hand their failed nodes to a recovery here, which handles each in a safe
order and keeps a row per node of what it found, what it did and what is left:

- **Who answers.** Each node is asked over SSH first. A node that does not
  answer at all is said to be so, with what to do next: in the lab, boot it
  (``faultbook lab boot``), which the recovery does itself once confirmed; on real
  hosts, run the inventory's ``power_playbook`` for it when one is named, else
  power it on through the provider and run the runbook again.
- **One confirmation per node** (``Procedure.allowed``, ``drills.confirm``),
  naming everything that will be done to it; a refused node is left as found.
- **Nodes that answer go first** (they are quick to bring back), then the ones
  that must be powered on. A node whose step fails is recorded and the recovery
  goes on with the next one, instead of stopping on one playbook error; the
  run's verdict still fails on that step.

Web nodes: drain every failed node on every lb first (they serve nothing anyway,
and a node that boots must not take requests before it is checked), then recover
each, then re-enable each. Load balancers: bring each back in turn; the first one
back takes the VIP when no lb held it, every later one must rejoin as BACKUP
without a flap.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from faultbook import ansible, ssh
from faultbook.drills.procedure import Procedure, now
from faultbook.errors import FaultbookError, ParameterError, WebTierError
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.stack import haproxy, vip

log = logging.getLogger(__name__)

# The inventory variable naming a playbook that powers a host on (real hosts):
# run on the controller with the extra var power_host=<host>; it returns once the
# host is powered on. faultbook ships none: it is the provider's API.
POWER_PLAYBOOK_VAR = "power_playbook"
COLUMNS = ["host", "answered", "plan", "outcome", "detail", "next"]


def answering(inv: Inventory, hosts: Sequence[str], timeout: float = 3.0) -> dict[str, bool]:
    """Which of HOSTS answer a command over SSH now."""
    res = ssh.run_many(inv, hosts, "true", timeout=timeout)
    return {h: isinstance(r, ssh.CommandResult) and r.ok for h, r in res.items()}


def can_power_on(inv: Inventory) -> str:
    """How this inventory powers a host on: "lab", a playbook's name, or "" (it cannot)."""
    if inv.is_lab:
        return "lab"
    return str(inv.vars.get(POWER_PLAYBOOK_VAR) or "")


def power_advice(inv: Inventory, host: str) -> str:
    """What to do about HOST not answering at all."""
    how = can_power_on(inv)
    if how == "lab":
        return f"boot it: faultbook lab boot {host} (this runbook does it once confirmed)"
    if how:
        return f"power it on: {how} with power_host={host} (this runbook runs it once confirmed)"
    return (
        f"power {host} on through your provider (or name a power playbook in the inventory "
        f"var {POWER_PLAYBOOK_VAR}), then run this runbook again"
    )


def power_on(inv: Inventory, host: str, timeout_s: float = 180.0) -> str:
    """Power HOST on (lab power control, or the inventory's power playbook) and wait until
    it answers over SSH; returns what was done. WebTierError when this inventory cannot."""
    how = can_power_on(inv)
    if how == "lab":
        from faultbook.lab.lab import Lab

        lab = Lab(inv)
        running = lab.pid(host) is not None  # e.g. its link was cut: nothing to boot
        lab.boot(host)
        if running:
            return f"{host} was running (not powered off) and answers over SSH again"
        return f"{host} booted (faultbook lab boot {host})"
    if not how:
        raise WebTierError(
            f"{host} does not answer and cannot be powered on from here: {power_advice(inv, host)}"
        )
    ansible.run_playbook(how, inv, extravars={"power_host": host})
    poll(
        lambda _t: True if answering(inv, [host]).get(host) else None,
        timeout_s,
        what=f"{host} answering SSH after {how}",
        interval_s=2.0,
        error=WebTierError,
    )
    return f"{host} powered on by {how}"


@dataclass
class Node:
    """One failed node: what was found, planned, done, and what is left."""

    host: str
    answered: bool
    plan: str = ""
    outcome: str = "pending"  # confirmed, refused, skipped, recovered, failed, unreachable
    detail: str = ""
    next: str = ""

    @property
    def active(self) -> bool:
        """Still being worked on: confirmed and nothing has failed for it."""
        return self.outcome == "confirmed"


@dataclass
class Recovery:
    """The failed nodes of one tier, in the order they are handled."""

    p: Procedure
    tier: str
    nodes: list[Node] = field(default_factory=list)

    @classmethod
    def plan(cls, p: Procedure, tier: str, hosts: Sequence[str]) -> Recovery:
        """Ask each host whether it answers; those that do are handled first."""
        alive = answering(p.inv, hosts) if hosts else {}
        nodes = [Node(h, alive.get(h, False)) for h in hosts]
        nodes.sort(key=lambda n: not n.answered)  # stable: inventory order within each kind
        for n in nodes:
            if not n.answered:
                n.next = power_advice(p.inv, n.host)
        return cls(p, tier, nodes)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([[getattr(n, c) for c in COLUMNS] for n in self.nodes], columns=COLUMNS)

    def summary(self) -> str:
        if not self.nodes:
            return f"no failed {self.tier} node"
        return "; ".join(
            f"{n.host}: {n.outcome}" + (f" ({n.next})" if n.next else "") for n in self.nodes
        )

    @property
    def active(self) -> list[Node]:
        return [n for n in self.nodes if n.active]

    def confirm(self, actions: Callable[[Node], str]) -> pd.DataFrame:
        """Ask once per node, naming everything ACTIONS(node) says will be done to it."""
        powers = can_power_on(self.p.inv)
        for n in self.nodes:  # what the person is asked about, before the first question
            said = "answers over SSH" if n.answered else f"does NOT answer over SSH: {n.next}"
            sys.stdout.write(f"{n.host}: {said}\n")
        for n in self.nodes:
            n.plan = actions(n)
            if not n.answered:
                n.plan = (f"boot {n.host}, then " if powers else "") + n.plan
            if self.p.allowed(n.plan, n.host):
                n.outcome = "confirmed"
                continue
            last = self.p.run.confirmations[-1] if self.p.run.confirmations else {}
            asked = last.get("host") == n.host and last.get("what") == n.plan
            n.outcome = "refused" if asked else "skipped"
            n.detail = self.p.run.steps[-1].detail if self.p.run.steps else ""
        return self.table()

    def each(self, step: str, fn: Callable[[Node], str], power: bool = False) -> None:
        """Run FN on every active node as step "STEP HOST"; a failure is recorded on the
        node (and as the run's failed step) and the others go on. With POWER, a node that
        did not answer is powered on first, just before its own turn (an lb booted early
        would take the VIP before the one that answers is back)."""
        for n in self.active:
            if power and not n.answered and not self._power_on(n):
                continue
            try:
                with self.p.run.step(f"{step} {n.host}") as st:
                    st.detail = fn(n)
                    n.detail = st.detail
                sys.stdout.write(f"{step} {n.host}: {n.detail}\n")
            except FaultbookError as exc:
                n.outcome = "failed"
                n.detail = f"{step}: {exc}"
                sys.stdout.write(f"FAILED: {step} {n.host}: {exc}\n")

    def _power_on(self, n: Node) -> bool:
        """Boot (or power on) N; False, with the node marked unreachable, when it cannot be."""
        try:
            with self.p.run.step(f"power on {n.host}") as st:
                st.detail = power_on(self.p.inv, n.host)
            n.answered, n.next = True, ""
            sys.stdout.write(f"{st.detail}\n")
            return True
        except FaultbookError as exc:
            n.outcome = "unreachable"
            n.detail = str(exc)
            sys.stdout.write(f"NOT ANSWERING: {n.host}: {n.next}\n")
            return False


# ------------------------------------------------------------------ web nodes
def web_actions(n: Node) -> str:
    return f"drain {n.host} on every lb, restart its ledger and re-enable it"


def web_drain(r: Recovery) -> pd.DataFrame:
    """Drain every confirmed node on every lb (a dead host too: only the lbs are asked)."""

    def one(n: Node) -> str:
        haproxy.drain(r.p.inv, n.host)
        return f"{n.host} drained in backends web and web_alive on every lb"

    if r.active:
        r.p.mark("action")
    r.each("drain", one)
    return r.table()


def web_recover(r: Recovery) -> pd.DataFrame:
    """Revert the drill's fault, power on what does not answer, restart each ledger."""

    def one(n: Node) -> str:
        haproxy.recover(r.p.inv, n.host)
        return f"ledger on {n.host} answers /readyz"

    r.p.revert()
    r.each("recover", one, power=True)
    return r.table()


def web_enable(r: Recovery) -> pd.DataFrame:
    """Re-enable each recovered node and wait until HAProxy has it UP."""

    def one(n: Node) -> str:
        haproxy.enable(r.p.inv, n.host)
        n.outcome = "recovered"
        return f"{n.host} is UP in backend web on every lb"

    r.each("enable", one)
    if r.nodes and all(n.outcome == "recovered" for n in r.nodes):
        r.p.mark("recovered")
    return r.table()


# ------------------------------------------------------------- load balancers
def lb_actions(n: Node) -> str:
    return (
        f"start HAProxy and keepalived on {n.host} (it rejoins as BACKUP); first, if it "
        "still claims the VIP that the other lb holds, kill its keepalived (SIGKILL) and "
        "remove the VIP from it"
    )


# What one confirmation per node names, per tier.
ACTIONS: dict[str, Callable[[Node], str]] = {"web": web_actions, "lb": lb_actions}


def plan(p: Procedure, tier: str, hosts: Sequence[str]) -> Recovery:
    """The failed nodes of TIER ("web" or "lb"): who answers, in the order handled."""
    if tier not in ACTIONS:
        raise ParameterError(f"tier must be one of {', '.join(ACTIONS)}, got {tier!r}")
    return Recovery.plan(p, tier, hosts)


def confirm(r: Recovery) -> pd.DataFrame:
    """One confirmation per failed node, naming what will be done to it; the table of
    who answers and the plan."""
    return r.confirm(ACTIONS[r.tier])


# How long a cut-off lb is given to give up the VIP by itself before it is fenced
# (vip.stand_down): keepalived's isolation check releases it about 3 s after the cut.
STAND_DOWN_S = 10.0


def lb_rejoin(
    r: Recovery, holder: str | None, timeout_s: float = 30.0, stand_down_s: float = STAND_DOWN_S
) -> pd.DataFrame:
    """Bring each confirmed lb back in turn. With no VIP holder, the first lb back must
    take the VIP; every lb back while another holds it must rejoin without a flap, so it
    must stop claiming the VIP before its fault is reverted (``vip.stand_down``: it gives
    the VIP up by itself, or is fenced)."""
    down: dict[str, str] = {}
    for n in r.active:
        if holder is not None and n.host != holder:
            try:
                down[n.host] = vip.stand_down(r.p.inv, n.host, stand_down_s) + "; "
            except FaultbookError as exc:
                down[n.host] = f"{exc}; "
    r.p.revert()
    state = {"holder": holder}

    def one(n: Node) -> str:
        return down.get(n.host, "") + back(n)

    def back(n: Node) -> str:
        back_at: datetime = now()
        vip.lb_recover(r.p.inv, n.host)
        current = state["holder"]
        if current == n.host:  # it kept the VIP while it was sick: it must serve again
            vip.require_healthy(vip.lb_status(r.p.inv), n.host)
            n.outcome = "recovered"
            return f"{n.host} is back and still holds the VIP"
        if current is None:
            state["holder"] = vip.wait_vip_held(r.p.inv, timeout_s)
            n.outcome = "recovered"
            return f"{n.host} is back; the VIP is on {state['holder']} again"
        vip.require_no_flap(r.p.inv, current, n.host, back_at)
        n.outcome = "recovered"
        return f"{n.host} is BACKUP again; the VIP stayed on {current}"

    if r.active:
        r.p.mark("action")
    r.each("rejoin", one, power=True)
    return r.table()
