"""Triage on the lab: for each fault it names the right link and the right runbook.

Each case starts from steady state, holds the inventory's run lock as a drill (the
alert receiver starts nothing behind a deliberate fault), injects one fault from the
catalogue, walks the chain (``collect`` then ``diagnose``) until the diagnosis names
the expected link or 20 s pass, and asserts on the diagnosis it last saw. The fault
is rolled back in ``finally`` and the stack must be steady again before the lock is
released.

The issue's "killed web service" is a stopped one here: ledger.service has
``Restart=always`` and ``RestartSec=1``, so a SIGKILLed app is back before a walk of
the chain ends (web-node-failure's service-kill drill measures that recovery).
The network cuts are ``path-cut`` faults, nftables inside one host dropping its
traffic with the other tier both ways: inside web2 against the primary, and inside
the primary against the whole web tier.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from faultbook import inventory as inv_mod
from faultbook import lock, ssh
from faultbook.drills import faults, procedure
from faultbook.drills.faults import Fault
from faultbook.errors import ConditionTimeout
from faultbook.lab.lab import Lab
from faultbook.poll import poll
from faultbook.report import runner
from faultbook.stack import vip
from faultbook.triage import collect
from faultbook.triage.diagnose import Diagnosis, Finding, diagnose

pytestmark = pytest.mark.integration

TIMEOUT_S = 8.0  # the runbook's default bound on each probe


@pytest.fixture(scope="module")
def inv(lab: Lab) -> inv_mod.Inventory:
    return lab.inv


@pytest.fixture
def primary(inv: inv_mod.Inventory) -> Iterator[str]:
    """A steady stack to start from; its primary. Afterwards: steady again."""
    state = procedure.wait_steady_state(inv, timeout_s=180)
    assert state.ok and state.primary, str(state)
    yield state.primary
    after = procedure.wait_steady_state(inv, timeout_s=180)
    assert after.ok, str(after)


@contextmanager
def injected(inv: inv_mod.Inventory, fault: Fault) -> Iterator[Fault]:
    """FAULT in effect under the run lock (as a drill); rolled back, then steady again."""
    with lock.hold(inv, f"test_triage: {fault.describe()}", drill=True):
        fault.prepare()
        fault.inject()
        try:
            yield fault
        finally:
            fault.rollback()
            state = procedure.wait_steady_state(inv, timeout_s=180)
            assert state.ok, f"after {fault.describe()}: {state}"


def walk(
    inv: inv_mod.Inventory, symptom: str, want: Callable[[Diagnosis], bool], timeout_s: float = 20
) -> Diagnosis:
    """Collect and diagnose until WANT holds or TIMEOUT_S passes; the last diagnosis."""
    last: list[Diagnosis] = []

    def attempt(_t: float) -> Diagnosis | None:
        e = collect.collect(inv, symptom, TIMEOUT_S)
        assert e.took_s < TIMEOUT_S, f"collecting took {e.took_s:.1f} s: a probe hung"
        last[:] = [diagnose(e)]
        return last[0] if want(last[0]) else None

    try:
        return poll(attempt, timeout_s, what="the diagnosis", seen=lambda: str(last[-1]))
    except ConditionTimeout:
        return last[-1]


def names(d: Diagnosis, link: str) -> bool:
    return d.finding is not None and d.finding.link == link


def finding(d: Diagnosis) -> Finding:
    assert d.finding is not None, str(d)
    return d.finding


def proposed(d: Diagnosis) -> tuple[str, dict[str, object], bool]:
    p = d.proposal
    assert p is not None, str(d)
    return p.runbook, dict(p.parameters), p.hand_over


def test_a_healthy_stack_has_nothing_broken(inv: inv_mod.Inventory, primary: str) -> None:
    d = walk(inv, "vip-probe", lambda d: not d.broken, timeout_s=10)
    assert not d.broken, str(d)
    assert f"{primary} is the primary" in " ".join(d.held), d.held


def test_a_stopped_web_service(inv: inv_mod.Inventory, primary: str) -> None:
    web = inv.group("web")[1].name
    fault = faults.make("service-stop", inv, web, unit="ledger.service", max_s=120)
    with injected(inv, fault):
        d = walk(inv, "5xx", lambda d: names(d, web))
    assert names(d, web), str(d)
    assert proposed(d) == ("web-node-failure", {"target": web}, True)


def test_a_powered_off_web_node(inv: inv_mod.Inventory, primary: str) -> None:
    web = inv.group("web")[-1].name
    with injected(inv, faults.make("host-crash", inv, web)):
        d = walk(inv, "5xx", lambda d: names(d, web))
    assert names(d, web), str(d)
    assert any("does not answer SSH" in e for e in finding(d).evidence), str(d)
    assert proposed(d) == ("web-node-failure", {"target": web}, True)


def test_a_crashed_primary(inv: inv_mod.Inventory, primary: str) -> None:
    with injected(inv, faults.make("host-crash", inv, primary)):
        d = walk(inv, "writes-fail", lambda d: names(d, f"the primary {primary}"))
    assert names(d, f"the primary {primary}"), str(d)
    assert "is down" in finding(d).summary, str(d)
    assert proposed(d) == ("db-failover", {"target": primary}, True)


def test_a_frozen_primary(inv: inv_mod.Inventory, primary: str) -> None:
    fault = faults.make(
        "process-freeze", inv, primary, unit="postgresql@15-main.service", max_s=120
    )
    with injected(inv, fault):
        d = walk(inv, "writes-fail", lambda d: names(d, f"the primary {primary}"))
    assert names(d, f"the primary {primary}"), str(d)
    assert "is frozen" in finding(d).summary, str(d)
    assert proposed(d) == ("db-failover", {"target": primary}, True)


def test_a_load_balancer_down(inv: inv_mod.Inventory, primary: str) -> None:
    holder = vip.vip_holder(inv)
    other = next(lb.name for lb in inv.group("lb") if lb.name != holder)
    with injected(inv, faults.make("host-crash", inv, other)):
        d = walk(inv, "vip-probe", lambda d: names(d, other))
    assert names(d, other), str(d)
    assert finding(d).summary == f"{other} is down; the VIP is on {holder}", str(d)
    assert proposed(d) == ("lb-failover", {"target": other}, True)


def test_a_cut_inside_a_web_node_against_the_primary(
    inv: inv_mod.Inventory, primary: str, tmp_path: Path
) -> None:
    """The runbook itself, as `faultbook run triage` runs it: exit 1, the link named, and
    triage.json for the receiver."""
    web = inv.group("web")[1].name
    others = [h.name for h in inv.group("web") if h.name != web]
    link = f"{web} → {primary}:5432"
    with injected(inv, faults.make("path-cut", inv, web, peers=[primary], max_s=180)):
        walk(inv, "5xx", lambda d: names(d, link))  # the cut is in effect for the runbook
        outcome = runner.run("triage", {"symptom": "5xx"}, tmp_path)
    handed = json.loads((tmp_path / "triage.json").read_text())
    assert outcome.exit_code == 1, outcome
    found = handed["finding"]
    assert found["link"] == link, handed
    assert f"because {web} cannot reach the primary {primary}, although" in found["summary"]
    assert all(o in found["summary"] for o in others), found["summary"]
    first, second = found["proposals"]
    assert (first["runbook"], first["parameters"], first["hand_over"]) == (
        "web-node-failure",
        {"target": web},
        False,
    )
    assert second["runbook"] == "" and "repair the path" in second["action"]
    assert json.loads((tmp_path / "result.json").read_text())["verdict"] == "fail"


def orphans(inv: inv_mod.Inventory, primary: str) -> dict[str, tuple[int, int]] | None:
    """Web hosts with more client backends on the primary than the host has connections
    to it ({host: (backends, connections)}); None when every backend has its client."""
    sql = (
        "select client_addr, count(*) from pg_stat_activity"
        " where client_addr is not null group by 1"
    )
    res = ssh.run(
        inv, primary, f"sudo -u postgres psql -XAt -F ' ' -c {shlex.quote(sql)}", timeout=15
    )
    backends = dict(line.split() for line in res.stdout.splitlines() if line.strip())
    out = {}
    for h in inv.group("web"):
        ss = ssh.run(inv, h.name, "ss -Htn state established dport = 5432", sudo=True, timeout=15)
        held = len(ss.stdout.splitlines())
        n = int(backends.get(h.address, 0))
        if n > held:
            out[h.name] = (n, held)
    return out or None


def test_a_cut_inside_the_primary_against_the_web_tier(
    inv: inv_mod.Inventory, primary: str
) -> None:
    """… and no backend outlives its client: the web nodes reconnect after the cut, and
    the primary drops the old sessions (TCP keepalives) instead of holding their slots."""
    webs = [h.name for h in inv.group("web")]
    link = f"web tier → {primary}:5432"
    with injected(inv, faults.make("path-cut", inv, primary, peers=webs, max_s=180)):
        d = walk(inv, "5xx", lambda d: names(d, link))
    seen: list[dict[str, tuple[int, int]] | None] = []

    def none_left(_t: float) -> bool | None:
        seen.append(orphans(inv, primary))
        return seen[-1] is None or None

    try:
        poll(none_left, 90, what="no orphaned backend on the primary", interval_s=5)
    except ConditionTimeout:
        pytest.fail(f"{primary}: backends without their client after the cut: {seen[-1]}")
    assert names(d, link), str(d)
    runbook, params, hand_over = proposed(d)
    standbys = {h.name for h in inv.group("db")} - {primary}
    assert (runbook, params["mode"], hand_over) == ("db-failover", "switchover", False), str(d)
    assert params["new_primary"] in standbys
    assert finding(d).proposals[1].action.startswith("repair the path")
