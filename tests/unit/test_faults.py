from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from faultbook import inventory as inv_mod
from faultbook import ssh
from faultbook.drills import faults, steps
from faultbook.errors import InventoryError, ParameterError, UsageError
from faultbook.paths import LAB_INVENTORY

REAL = """
all:
  vars: {ansible_user: deploy}
  children:
    web:
      hosts:
        app1: {ansible_host: 192.0.2.10}
"""


@pytest.fixture
def lab() -> inv_mod.Inventory:
    return inv_mod.load(LAB_INVENTORY)


@pytest.fixture
def real(tmp_path: Path) -> inv_mod.Inventory:
    p = tmp_path / "hosts.yml"
    p.write_text(REAL)
    return inv_mod.load(p)


def test_catalogue_has_every_kind() -> None:
    assert set(faults.CATALOGUE) == {
        "host-crash",
        "service-kill",
        "service-stop",
        "process-freeze",
        "partition",
        "delay-loss",
        "disk-full",
        "clock-skew",
        "exposed-listener",
        "path-cut",
    }
    needs_lab = {r["fault"] for r in faults.catalogue_table() if r["needs_lab"]}
    assert needs_lab == {"host-crash"}
    what = {r["fault"]: r["what"] for r in faults.catalogue_table()}
    assert what["disk-full"].startswith("Fill the filesystem holding a path")
    assert what["clock-skew"].startswith("Step a host's clock")


def test_unknown_kind_names_the_choices(lab: inv_mod.Inventory) -> None:
    with pytest.raises(ParameterError, match="unknown fault 'host-crsh'; expected one of"):
        faults.make("host-crsh", lab, "db1")


def test_unknown_host_is_an_inventory_error(lab: inv_mod.Inventory) -> None:
    with pytest.raises(InventoryError, match="db9"):
        faults.make("service-kill", lab, "db9", unit="postgresql@15-main")


def test_host_crash_needs_the_lab(real: inv_mod.Inventory) -> None:
    with pytest.raises(UsageError, match="needs the lab") as err:
        faults.make("host-crash", real, "app1")
    assert str(err.value).endswith("partition, delay-loss, disk-full, clock-skew")


def test_unit_name_is_required_and_checked(lab: inv_mod.Inventory) -> None:
    with pytest.raises(ParameterError, match="systemd unit"):
        faults.make("service-kill", lab, "web1")
    with pytest.raises(ParameterError, match="systemd unit"):
        faults.make("service-stop", lab, "web1", unit="ledger; rm -rf /")


def test_unknown_option_is_a_parameter_error(lab: inv_mod.Inventory) -> None:
    with pytest.raises(ParameterError, match="delay-loss"):
        faults.make("delay-loss", lab, "web1", jitter_ms=3)


def test_delay_loss_bounds(lab: inv_mod.Inventory) -> None:
    with pytest.raises(ParameterError, match="loss_pct"):
        faults.make("delay-loss", lab, "web1", delay_ms=10, loss_pct=150)


def test_revert_without_inject_is_a_no_op(lab: inv_mod.Inventory) -> None:
    f = faults.make("service-stop", lab, "web1", unit="ledger.service")
    f.revert()  # never injected: nothing to do, nothing recorded
    assert f.to_dict() == {
        "kind": "service-stop",
        "target": "web1",
        "injected_at": None,
        "reverted_at": None,
        "detail": "service-stop of ledger.service on web1",
    }


def test_partition_ruleset_keeps_only_controller_ssh() -> None:
    rules = faults.partition_ruleset("10.0.0.5")
    assert "policy drop" in rules
    assert "ip saddr 10.0.0.5 tcp dport 22 accept" in rules
    assert "ip daddr 10.0.0.5 tcp sport 22 accept" in rules
    assert rules.count("accept") == 4  # loopback in/out and the controller's SSH


@pytest.mark.parametrize(
    "kind, options",
    [
        ("host-crash", {"units": ["ledger.service"]}),
        ("service-kill", {"unit": "ledger.service"}),
        ("service-stop", {"unit": "ledger.service", "max_s": 60}),
        ("process-freeze", {"unit": "ledger.service"}),
        ("partition", {}),
        ("delay-loss", {"delay_ms": 50, "loss_pct": 5, "interface": "eth1"}),
        ("disk-full", {}),
        ("disk-full", {"path": "/srv", "leave_mib": 64, "max_gib": 2, "max_s": 120}),
        ("clock-skew", {"unit": "ledger.service", "offset_s": -200}),
    ],
)
def test_a_fault_rebuilds_from_its_spec(
    lab: inv_mod.Inventory, kind: str, options: dict[str, object]
) -> None:
    f = faults.make(kind, lab, "web1", **options)
    g = faults.make(kind, lab, "web1", **f.spec())
    assert type(g) is type(f) and g.spec() == f.spec() and g.describe() == f.describe()
    assert g.injected_at is None  # rebuilt, not injected: rollback() probes instead


def test_lab_side_faults(lab: inv_mod.Inventory, real: inv_mod.Inventory) -> None:
    assert faults.make("host-crash", lab, "web1").lab_side
    assert faults.make("partition", lab, "web1").lab_side
    assert faults.make("delay-loss", lab, "web1").lab_side
    assert not faults.make("partition", real, "app1").lab_side  # an nftables table + timer
    assert not faults.make("service-stop", lab, "web1", unit="ledger.service").lab_side
    assert not faults.make("disk-full", lab, "web1").lab_side  # a timer on the host
    assert not faults.make("clock-skew", lab, "web1", unit="ledger.service").lab_side


class _PoweredOff:
    """The lab as a fault sees it, with its host's machine not running."""

    def pid(self, host: str) -> None:
        return None


class _Running:
    def pid(self, host: str) -> int:
        return 4242


def test_a_freeze_ends_with_a_lab_host_fenced_while_frozen(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """db-failover fences a frozen primary (the lab powers it off): its revert, before
    the rejoin boots it, has nothing to resume and must not try SSH."""
    f = faults.make("process-freeze", lab, "db1", unit="postgresql@15-main.service")
    calls: list[str] = []

    def run(inv: object, host: object, command: str, **kw: object) -> ssh.CommandResult:
        calls.append(command)
        return ssh.CommandResult("db1", 0, "0\n", "")

    monkeypatch.setattr(ssh, "run", run)
    monkeypatch.setattr(faults.Fault, "_lab", lambda self: _PoweredOff())
    f.injected_at = faults._now()
    assert not f.in_effect()
    f.revert()
    assert f.reverted_at is not None and calls == []
    assert f.rollback() == (
        "already reverted",
        "process-freeze of postgresql@15-main.service on db1: db1 is powered off: no "
        "process of postgresql@15-main.service is left",
    )
    assert calls == []
    monkeypatch.setattr(faults.Fault, "_lab", lambda self: _Running())
    g = faults.make("process-freeze", lab, "db1", unit="postgresql@15-main.service")
    g.injected_at = faults._now()
    g.revert()
    (cmd,) = calls
    assert cmd.endswith("systemctl kill --signal=SIGCONT postgresql@15-main.service")


@pytest.mark.parametrize(
    ("runbook", "kind"),
    # fault-observe builds its faults from its own options (tests/unit/test_observe.py).
    [(r, k) for r, spec in steps.DRILLS.items() for k in spec.faults if r != "fault-observe"],
)
def test_every_fault_a_drill_offers_builds_for_its_target(
    lab: inv_mod.Inventory, runbook: str, kind: str
) -> None:
    """steps.fault hands a unit fault the runbook's unit and the others nothing."""
    spec = steps.DRILLS[runbook]
    host = lab.group(spec.group)[0].name
    f = steps.fault(SimpleNamespace(runbook=runbook, inv=lab), kind, host)  # type: ignore[arg-type]
    assert f.kind == kind and f.target == host
    if isinstance(f, faults.ProcessFreeze):
        assert f.unit == spec.unit


def test_the_drills_that_take_the_new_faults() -> None:
    assert steps.DRILLS["db-failover"].unit == "postgresql@15-main.service"
    assert "process-freeze" in steps.DRILLS["db-failover"].faults
    assert "partition" in steps.DRILLS["web-node-failure"].faults
    assert {"process-freeze", "partition"} <= set(steps.DRILLS["lb-failover"].faults)
    # Not a failover: a full disk, a skewed clock or a slow link leave the target answering;
    # fault-observe drills them, no failover runbook does.
    for runbook, spec in steps.DRILLS.items():
        observed = {"disk-full", "clock-skew", "delay-loss"} & set(spec.faults)
        assert observed == (observed if runbook == "fault-observe" else set()), runbook
    assert {"disk-full", "clock-skew", "delay-loss"} <= set(steps.DRILLS["fault-observe"].faults)
