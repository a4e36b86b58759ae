"""Confirmations a person gives, and recovering every failed node of a tier in one run.

The SSH probe, the playbooks and the lab's power control are replaced by recorders:
what is tested is the decisions (who is asked, in what order nodes are handled, what
a failure or a refusal leaves) and what result.json keeps of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faultbook import inventory as inv_mod
from faultbook.drills import confirm, procedure, recovery
from faultbook.errors import DrillAborted, PlaybookFailed, WebTierError
from faultbook.results import Run, validate
from faultbook.stack import haproxy, vip
from faultbook.stack.haproxy import BackendHealth


@pytest.fixture
def lab() -> inv_mod.Inventory:
    return inv_mod.load("lab")


def _incident(
    lab: inv_mod.Inventory, answers: list[str | None], confirm_: bool = False
) -> procedure.Procedure:
    run = Run.start("web-node-failure", "incident", {"mode": "incident"})
    asked = iter(answers)
    p = procedure.Procedure("web-node-failure", lab, "incident", run, confirm=confirm_)
    p.ask = lambda q: next(asked)
    return p


# ------------------------------------------------------------------ confirm
def test_standing_confirmation_asks_nobody_and_is_recorded() -> None:
    def never(q: str) -> str | None:
        raise AssertionError("asked although confirm=True")

    c = confirm.decide("drain web2", "web2", True, never)
    assert c is not None and c.granted and c.by == confirm.BY_PARAMETER


def test_unattended_without_confirm_is_no_decision() -> None:
    assert confirm.decide("drain web2", "web2", False, lambda q: None) is None


@pytest.mark.parametrize(
    ("typed", "granted"),
    [("web2", True), (" web2\n", True), ("yes", False), ("", False), ("web3", False)],
)
def test_only_the_host_name_confirms(typed: str, granted: bool) -> None:
    seen: list[str] = []
    c = confirm.decide("drain web2", "web2", False, lambda q: seen.append(q) or typed)
    assert c is not None and c.granted is granted
    assert "drain web2" in seen[0] and "Type web2" in seen[0]


def test_outside_a_kernel_nobody_is_asked() -> None:
    assert confirm.ask_in_notebook("question? ") is None


def test_allowed_records_confirmations_refusals_and_skips(
    lab: inv_mod.Inventory, tmp_path: Path
) -> None:
    p = _incident(lab, ["db1", "nope", None])
    assert p.allowed("fence db1", "db1") is True
    assert p.allowed("rejoin db1", "db1") is False
    assert p.allowed("promote db2", "db2") is False
    assert [c["granted"] for c in p.run.confirmations] == [True, False]
    assert p.run.confirmations[1]["answer"] == "nope"
    skipped = [s for s in p.run.steps if s.status == "skipped"]
    assert [s.name for s in skipped] == ["rejoin db1", "promote db2"]
    assert "refused" in skipped[0].detail and "unattended" in skipped[1].detail
    doc = p.run.finish()
    validate(doc)  # result.json keeps them, schema-valid
    assert doc["confirmations"][0]["what"] == "fence db1"


def test_drill_mode_asks_nobody(lab: inv_mod.Inventory) -> None:
    run = Run.start("web-node-failure", "drill", {"mode": "drill"})
    p = procedure.Procedure("web-node-failure", lab, "drill", run)
    p.ask = lambda q: pytest.fail("a drill asked")  # type: ignore[assignment,return-value]
    assert p.allowed("drain web2", "web2") and not p.run.confirmations


# ------------------------------------------------------------- target choice
def test_incident_takes_every_failed_web_node(lab: inv_mod.Inventory) -> None:
    two = BackendHealth("web", ("web2", "web3"))
    assert haproxy.pick_targets(two, "", "incident", lab) == ["web2", "web3"]
    # a named target that is UP again is left alone; the others are still handled
    assert haproxy.pick_targets(two, "web1", "incident", lab) == ["web2", "web3"]
    assert haproxy.pick_targets(BackendHealth("web", ()), "web2", "incident", lab) == []
    assert haproxy.pick_targets(BackendHealth("web", ()), "", "drill", lab) == ["web1"]


def test_a_whole_tier_out_but_alive_is_not_a_web_node_failure(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node fails /readyz; web2 still answers /healthz: the cause is behind them."""
    every = BackendHealth("web", ("web1", "web2", "web3"))
    asked: list[str] = []

    def alive(inv: Any, backend: str = "web", timeout: float = 3.0) -> BackendHealth:
        asked.append(backend)
        return BackendHealth(backend, ("web1", "web3"))

    monkeypatch.setattr(haproxy, "failed_backends", alive)
    with pytest.raises(DrillAborted, match=r"web2 still answer /healthz.*faultbook run triage"):
        haproxy.pick_targets(every, "web2", "incident", lab)
    assert asked == ["web_alive"]
    # every node dead (down in web_alive too): each is recovered
    monkeypatch.setattr(haproxy, "failed_backends", lambda *a, **k: every)
    assert haproxy.pick_targets(every, "", "incident", lab) == ["web1", "web2", "web3"]
    # one node out: web_alive is not asked
    monkeypatch.setattr(haproxy, "failed_backends", lambda *a, **k: pytest.fail("asked"))
    assert haproxy.pick_targets(BackendHealth("web", ("web2",)), "", "incident", lab) == ["web2"]


def _lbs(**rows: dict[str, Any]) -> Any:
    import pandas as pd

    healthy = {"reachable": True, "haproxy": "active", "keepalived": "active", "healthz": True}
    return pd.DataFrame([{"lb": lb, **healthy, **r} for lb, r in rows.items()])


def test_incident_takes_both_lbs_in_inventory_order(lab: inv_mod.Inventory) -> None:
    both = _lbs(lb2={"reachable": False}, lb1={"haproxy": "failed"})
    assert vip.pick_lbs(both, None, "", "incident", lab) == ["lb1", "lb2"]
    assert vip.pick_lbs(_lbs(lb1={}, lb2={}), "lb1", "", "incident", lab) == []
    assert vip.pick_lbs(_lbs(lb1={}, lb2={}), "lb1", "", "drill", lab) == ["lb1"]


def test_vip_cannot_move_when_every_lb_failed(lab: inv_mod.Inventory) -> None:
    assert vip.wait_vip_moved(lab, ["lb1", "lb2"], 1.0) is None


# ---------------------------------------------------------------- recovery
@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Who answers SSH, and every action the recovery took, in order."""
    w: dict[str, Any] = {
        "answers": {"web1": True, "web2": True, "web3": False},
        "did": [],
        "fail": set(),
    }

    def act(name: str):  # type: ignore[no-untyped-def]
        def f(inv: Any, host: str, *a: Any, **k: Any) -> None:
            if (name, host) in w["fail"]:
                raise PlaybookFailed(f"web_{name}.yml", 2, host, name, "it said no")
            w["did"].append((name, host))
            if name == "power":
                w["answers"][host] = True

        return f

    monkeypatch.setattr(
        recovery, "answering", lambda inv, hosts, timeout=3.0: {h: w["answers"][h] for h in hosts}
    )
    monkeypatch.setattr(haproxy, "drain", act("drain"))
    monkeypatch.setattr(haproxy, "recover", act("recover"))
    monkeypatch.setattr(haproxy, "enable", act("enable"))
    boot = act("power")
    monkeypatch.setattr(
        recovery, "power_on", lambda inv, host: (boot(inv, host), f"{host} booted")[1]
    )
    return w


def test_two_failed_web_nodes_one_powered_off(
    lab: inv_mod.Inventory, world: dict[str, Any]
) -> None:
    p = _incident(lab, ["web3", "web2"])  # asked in the order handled: web2 answers, so first
    r = recovery.plan(p, "web", ["web3", "web2"])
    assert [n.host for n in r.nodes] == ["web2", "web3"]
    assert "faultbook lab boot web3" in r.nodes[1].next
    r.confirm(recovery.web_actions)
    # the answers were given for the other host each time: both refused
    assert [n.outcome for n in r.nodes] == ["refused", "refused"]
    assert world["did"] == []

    p = _incident(lab, ["web2", "web3"])
    r = recovery.plan(p, "web", ["web2", "web3"])
    table = recovery.confirm(r)
    assert list(table["host"]) == ["web2", "web3"] and list(table["answered"]) == [True, False]
    assert r.nodes[1].plan.startswith("boot web3, then drain web3")
    recovery.web_drain(r)
    recovery.web_recover(r)
    recovery.web_enable(r)
    assert world["did"] == [
        ("drain", "web2"),
        ("drain", "web3"),
        ("recover", "web2"),
        ("power", "web3"),
        ("recover", "web3"),
        ("enable", "web2"),
        ("enable", "web3"),
    ]
    assert [n.outcome for n in r.nodes] == ["recovered", "recovered"]
    assert "recovered" in p.markers and "action" in p.markers
    assert [c["host"] for c in p.run.confirmations] == ["web2", "web3"]


def test_one_node_failing_does_not_stop_the_others(
    lab: inv_mod.Inventory, world: dict[str, Any]
) -> None:
    world["answers"]["web3"] = True
    world["fail"].add(("recover", "web2"))
    p = _incident(lab, [], confirm_=True)
    r = recovery.plan(p, "web", ["web2", "web3"])
    recovery.confirm(r)
    recovery.web_drain(r)
    recovery.web_recover(r)
    recovery.web_enable(r)
    assert [n.outcome for n in r.nodes] == ["failed", "recovered"]
    assert ("enable", "web2") not in world["did"] and ("enable", "web3") in world["did"]
    failed = [s for s in p.run.steps if s.status == "failed"]
    assert [s.name for s in failed] == ["recover web2"]
    assert "recovered" not in p.markers  # not every node came back
    assert p.run.finish()["verdict"] == "fail"


def test_a_refused_node_is_left_as_found(lab: inv_mod.Inventory, world: dict[str, Any]) -> None:
    world["answers"]["web3"] = True
    p = _incident(lab, ["web2", "no"])
    r = recovery.plan(p, "web", ["web2", "web3"])
    recovery.confirm(r)
    recovery.web_drain(r)
    recovery.web_recover(r)
    recovery.web_enable(r)
    assert all(h == "web2" for _, h in world["did"])
    assert [n.outcome for n in r.nodes] == ["recovered", "refused"]


def test_real_host_without_power_playbook_is_reported_and_the_rest_goes_on(
    monkeypatch: pytest.MonkeyPatch, lab: inv_mod.Inventory, world: dict[str, Any]
) -> None:
    monkeypatch.setattr(recovery, "can_power_on", lambda inv: "")

    def cannot(inv: Any, host: str) -> str:
        raise WebTierError(f"{host} does not answer and cannot be powered on from here")

    monkeypatch.setattr(recovery, "power_on", cannot)
    p = _incident(lab, [], confirm_=True)
    r = recovery.plan(p, "web", ["web2", "web3"])
    recovery.confirm(r)
    recovery.web_drain(r)
    recovery.web_recover(r)
    recovery.web_enable(r)
    assert [n.outcome for n in r.nodes] == ["recovered", "unreachable"]
    assert ("drain", "web3") in world["did"]  # taken out of rotation on the lbs all the same
    assert ("recover", "web3") not in world["did"]
    assert "power on" in r.summary() or "provider" in r.summary()


def test_power_advice_names_the_way_for_each_kind_of_inventory(
    monkeypatch: pytest.MonkeyPatch, lab: inv_mod.Inventory
) -> None:
    assert "faultbook lab boot web3" in recovery.power_advice(lab, "web3")
    monkeypatch.setattr(recovery, "can_power_on", lambda inv: "")
    assert "through your provider" in recovery.power_advice(lab, "web3")
    assert recovery.POWER_PLAYBOOK_VAR in recovery.power_advice(lab, "web3")
    monkeypatch.setattr(recovery, "can_power_on", lambda inv: "power_on.yml")
    assert "power_on.yml with power_host=web3" in recovery.power_advice(lab, "web3")


def lb_world(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every lb answers; the VIP and VRRP calls of ``lb_rejoin`` are recorded, in order."""
    did: list[tuple[str, str]] = []
    monkeypatch.setattr(
        recovery, "answering", lambda inv, hosts, timeout=3.0: dict.fromkeys(hosts, True)
    )
    monkeypatch.setattr(
        vip, "stand_down", lambda inv, h, t: did.append(("stand down", h)) or f"{h} fenced"
    )
    monkeypatch.setattr(vip, "lb_recover", lambda inv, h: did.append(("recover", h)))
    monkeypatch.setattr(vip, "wait_vip_held", lambda inv, t: did.append(("held", "?")) or "lb1")
    monkeypatch.setattr(
        vip,
        "require_no_flap",
        lambda inv, holder, back, since: did.append(("no flap", f"{holder}/{back}")),
    )
    return did


def test_both_lbs_the_first_back_takes_the_vip_the_second_must_not_flap(
    monkeypatch: pytest.MonkeyPatch, lab: inv_mod.Inventory
) -> None:
    did = lb_world(monkeypatch)
    p = _incident(lab, [], confirm_=True)
    p.runbook = "lb-failover"
    r = recovery.plan(p, "lb", ["lb1", "lb2"])
    recovery.confirm(r)
    recovery.lb_rejoin(r, None)
    assert did == [("recover", "lb1"), ("held", "?"), ("recover", "lb2"), ("no flap", "lb1/lb2")]
    assert [n.outcome for n in r.nodes] == ["recovered", "recovered"]


def test_an_lb_back_while_the_other_holds_the_vip_stands_down_before_its_revert(
    monkeypatch: pytest.MonkeyPatch, lab: inv_mod.Inventory
) -> None:
    did = lb_world(monkeypatch)
    p = _incident(lab, [], confirm_=True)
    p.runbook = "lb-failover"
    monkeypatch.setattr(p, "revert", lambda: did.append(("revert", "")))
    r = recovery.plan(p, "lb", ["lb1"])
    recovery.confirm(r)
    assert "kill its keepalived (SIGKILL)" in r.nodes[0].plan  # the person is told
    recovery.lb_rejoin(r, "lb2")
    assert did == [
        ("stand down", "lb1"),
        ("revert", ""),
        ("recover", "lb1"),
        ("no flap", "lb2/lb1"),
    ]
    assert r.nodes[0].detail.startswith("lb1 fenced; lb1 is BACKUP again")
