from __future__ import annotations

from pathlib import Path

import pytest

from faultbook import inventory
from faultbook.errors import InventoryError
from faultbook.paths import LAB_INVENTORY


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hosts.yml"
    p.write_text(text)
    return p


def test_lab_inventory_has_the_designed_topology() -> None:
    inv = inventory.load("lab")
    assert inv.is_lab
    assert len(inv.hosts) == 11
    assert [h.name for h in inv.group("db")] == ["db1", "db2", "db3"]
    assert inv.host("lb1").address == "10.77.0.11"
    assert inv.host("db2").vars["postgresql_initial_primary"] == "db1"
    assert inv.vars["vip"] == "10.77.0.10"
    assert {h.address for h in inv.hosts.values()} >= {"10.77.0.51", "10.77.0.42"}
    inventory.require_ipv4_in(inv, "10.77.0.0/24")


def test_example_inventory_has_the_same_groups() -> None:
    lab = inventory.load("lab")
    example = inventory.load("example")
    assert not example.is_lab
    assert set(example.groups) == set(lab.groups)


def test_host_vars_override_group_vars_which_override_all(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        """
all:
  vars: {x: all, y: all, z: all}
  children:
    g:
      vars: {x: group, y: group}
      hosts:
        h1: {ansible_host: 192.0.2.1, x: host}
""",
    )
    h = inventory.load(p).host("h1")
    assert (h.vars["x"], h.vars["y"], h.vars["z"]) == ("host", "group", "all")
    assert h.groups == ("g",)


def test_unknown_host_lists_the_known_ones() -> None:
    inv = inventory.load("lab")
    with pytest.raises(InventoryError, match="unknown host 'db9'.*known hosts: lb1, lb2, web1"):
        inv.host("db9")


def test_select_groups_and_hosts_in_inventory_order() -> None:
    inv = inventory.load(LAB_INVENTORY)
    assert [h.name for h in inv.select(["mon1", "lb"])] == ["lb1", "lb2", "mon1"]
    with pytest.raises(InventoryError, match="unknown host 'nope'"):
        inv.select(["nope"])


@pytest.mark.parametrize(
    "text, message",
    [
        ("all: [1, 2", r"hosts.yml: not valid YAML at line \d+"),
        ("hosts: {}", "expected a mapping with a top-level 'all' group"),
        ("all:\n  children:\n    g:\n      hostz: {}\n", "unexpected key.*hostz"),
        (
            "all:\n  children:\n    g:\n      hosts: [a, b]\n",
            "'all.children.g.hosts' must be a mapping",
        ),
        ("all:\n  vars: {a: 1}\n", "defines no hosts"),
        (
            "all:\n  hosts:\n    a: {ansible_host: 10.0.0.1}\n    b: {ansible_host: 10.0.0.1}\n",
            "hosts a and b share the address 10.0.0.1",
        ),
    ],
)
def test_malformed_inventory_names_file_and_fault(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(InventoryError, match=message) as exc:
        inventory.load(p)
    assert str(p) in str(exc.value)


def test_missing_inventory_lists_the_available_ones() -> None:
    with pytest.raises(InventoryError, match="not found.*example, lab"):
        inventory.load("no-such-inventory")


def test_lab_addresses_must_be_in_the_subnet(tmp_path: Path) -> None:
    p = write(tmp_path, "all:\n  hosts:\n    a: {ansible_host: 192.0.2.9}\n")
    with pytest.raises(InventoryError, match="outside the lab subnet 10.77.0.0/24"):
        inventory.require_ipv4_in(inventory.load(p), "10.77.0.0/24")
    p = write(tmp_path, "all:\n  hosts:\n    a: {ansible_host: a.example}\n")
    with pytest.raises(InventoryError, match="expected an IPv4 address"):
        inventory.require_ipv4_in(inventory.load(p), "10.77.0.0/24")


def test_lab_connection_uses_faultbook_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path))
    conn = inventory.connection(inventory.load("lab"))
    assert conn.user == "deploy"
    assert conn.known_hosts == tmp_path / "lab" / "ssh" / "known_hosts"
    assert conn.key_file == tmp_path / "lab" / "ssh" / "id_ed25519"
