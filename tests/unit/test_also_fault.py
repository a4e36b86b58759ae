"""db-failover's also_fault: a second fault, on another tier's host, before the primary's."""

from __future__ import annotations

import pytest

from faultbook import inventory
from faultbook.drills import steps
from faultbook.errors import InventoryError, ParameterError


@pytest.fixture(scope="module")
def inv() -> inventory.Inventory:
    return inventory.load("lab")


def test_kind_at_group_is_that_fault_on_the_groups_first_host(inv: inventory.Inventory) -> None:
    assert steps.parse_also(inv, "host-crash@backup", "db") == ("host-crash", "backup1")
    assert steps.parse_also(inv, "host-crash@mon", "db") == ("host-crash", "mon1")
    assert steps.parse_also(inv, "partition@web", "db") == ("partition", "web1")


@pytest.mark.parametrize(
    ("spec", "error", "needle"),
    [
        ("host-crash", ParameterError, "expected KIND@GROUP, e.g. host-crash@backup"),
        ("@backup", ParameterError, "expected KIND@GROUP"),
        ("service-kill@web", ParameterError, "kind 'service-kill' is invalid"),
        ("host-crash@db", ParameterError, "another group than the drill's own \\(db\\)"),
        ("host-crash@all", ParameterError, "group 'all' is invalid"),
        ("host-crash@nosuch", InventoryError, "unknown group 'nosuch'"),
    ],
)
def test_bad_specs_are_one_line_errors(
    inv: inventory.Inventory, spec: str, error: type, needle: str
) -> None:
    with pytest.raises(error, match=needle) as e:
        steps.parse_also(inv, spec, "db")
    assert "\n" not in str(e.value)


def test_begin_refuses_it_outside_drill_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = {
        "inventory": "lab",
        "mode": "switchover",
        "target": "",
        "fault": "host-crash",
        "also_fault": "host-crash@backup",
        "load_rps": 20.0,
        "duration_s": 45.0,
        "max_rto_s": 30.0,
        "max_lost_writes": 0,
        "max_failed_requests": -1,
    }
    with pytest.raises(ParameterError, match="also_fault='host-crash@backup' is for drill mode"):
        steps.begin("db-failover", ns)
    with pytest.raises(InventoryError, match="unknown group 'bakup'"):
        steps.begin("db-failover", ns | {"mode": "drill", "also_fault": "host-crash@bakup"})
