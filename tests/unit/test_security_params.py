"""The security audit's parameters: every bad value is one line naming it and what is expected."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from faultbook.errors import InventoryError, ParameterError, UsageError
from faultbook.security import audit

GOOD: dict[str, Any] = {
    "inventory": "lab",
    "mode": "incident",
    "outside_address": "10.77.0.250",
    "tcp_ports": "1-65535",
    "scan_timeout_s": 300.0,
    "cert_min_days": 14.0,
    "drill_host": "restore1",
    "drill_port": 18123,
    "result_dir": "",
}


def begin(**kw: Any) -> audit.Audit:
    return audit.begin(**{**GOOD, **kw})


def test_good_parameters_start_a_record() -> None:
    a = begin()
    assert a.run.runbook == "security-audit" and a.run.mode == "incident"
    assert a.outside_address == "10.77.0.250" and a.tcp_ports == "1-65535"
    assert "outside vantage 10.77.0.250" in a.describe()
    on = a.inv.vars.get("security_hardening") is True  # the lab sets it since the hardening
    assert ("hardening checks on" in a.describe()) is on
    assert ("hardening checks off" in a.describe()) is not on


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"mode": "attack"}, "mode must be one of incident, drill, got 'attack'"),
        ({"tcp_ports": "1-70000"}, "tcp_ports must be ports or ranges in 1-65535"),
        ({"tcp_ports": "22;rm -rf /"}, "tcp_ports must be ports"),
        ({"tcp_ports": "100-20"}, "tcp_ports must be ports"),
        ({"scan_timeout_s": float("nan")}, "scan_timeout_s must be a number in \\[10, 3600\\]"),
        ({"scan_timeout_s": -5.0}, "scan_timeout_s must be in \\[10, 3600\\], got -5.0"),
        ({"scan_timeout_s": True}, "scan_timeout_s must be a number"),
        ({"cert_min_days": -1.0}, "cert_min_days must be in \\[0, 365\\]"),
        ({"drill_port": 22}, "drill_port must be an integer in 1025-65535"),
        ({"drill_port": 8432}, "drill_port 8432 is a port the flow table opens"),
        ({"outside_address": "192.168.1.5"}, "vantage address '192.168.1.5' is outside the lab"),
        ({"outside_address": "10.77.0.31"}, "is db1's"),
        ({"outside_address": "10.77.0.1"}, "is controller_ip's"),
    ],
)
def test_bad_parameters_are_one_line_usage_errors(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ParameterError, match=words) as err:
        begin(**kw)
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_unknown_hosts_and_inventories_are_named() -> None:
    with pytest.raises(InventoryError, match="unknown host 'db9'.*known hosts: lb1"):
        begin(drill_host="db9")
    with pytest.raises(UsageError, match="inventory 'nope' not found"):
        begin(inventory="nope")


def test_an_unwritable_result_dir_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ParameterError, match="result_dir .* cannot be created"):
        begin(result_dir=str(f / "sub"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(ParameterError, match="is not writable"):
            begin(result_dir=str(ro))


def test_the_drills_fault_is_rebuilt_from_its_journal_entry(tmp_path: Path) -> None:
    from faultbook import inventory
    from faultbook.drills import faults, journal

    inv = inventory.load("lab")
    f = faults.make("exposed-listener", inv, "restore1", port=18123, max_s=60)
    assert f.describe() == "exposed-listener on restore1 tcp/18123" and not f.game_day
    j = journal.Journal(tmp_path)
    e = j.intent(f)
    again = journal.rebuild(e)
    assert isinstance(again, type(f)) and again.spec() == {"max_s": 60.0, "port": 18123}
    for bad in (22, 70000, True, "18123"):
        with pytest.raises(ParameterError, match="exposed-listener needs a port in 1025-65535"):
            faults.make("exposed-listener", inv, "restore1", port=bad)
