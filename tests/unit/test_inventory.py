from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from faultbook import inventory
from faultbook.errors import InventoryError
from faultbook.paths import LAB_INVENTORY

FIXTURES = Path(__file__).parent / "fixtures" / "inventories"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hosts.yml"
    p.write_text(text)
    return p


def test_lab_inventory_has_the_designed_topology() -> None:
    inv = inventory.load("lab")
    assert inv.is_lab
    assert len(inv.hosts) == 12
    assert [h.name for h in inv.group("mon")] == ["mon1", "mon2"]
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
        ("hosts: {}", "defines no hosts"),  # Ansible reads 'hosts' as a group
        ("all:\n  children:\n    g:\n      hostz: {}\n", "unexpected key.*hostz"),
        (
            "all:\n  children:\n    g:\n      hosts: [a, b]\n",
            'Invalid "hosts" entry for "g" group, requires a dictionary',
        ),
        ("all:\n  vars: {a: 1}\n", "defines no hosts"),
        (
            "all:\n  hosts:\n    a: {ansible_host: 10.0.0.1}\n    b: {ansible_host: 10.0.0.1}\n",
            "hosts a and b share the address 10.0.0.1",
        ),
    ],
)
def test_malformed_inventory_names_file_and_fault(
    tmp_path: Path, text: str, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    p = write(tmp_path, text)
    with pytest.raises(InventoryError, match=message) as exc:
        inventory.load(p)
    assert str(exc.value).startswith(f"{p}: ")
    assert "\n" not in str(exc.value)
    assert capfd.readouterr() == ("", "")  # Ansible's warnings stay off the terminal


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


# --------------------------------------------------------------------------- Ansible's reader


@pytest.mark.parametrize("name", ["lab", "example"])
def test_repo_inventories_read_as_the_old_parser_read_them(name: str) -> None:
    path = inventory.resolve_path(name)
    old = _old_parse(yaml.safe_load(path.read_text()))
    new = inventory.load(name)
    assert list(new.hosts) == list(old["hosts"])
    assert {n: (h.address, h.groups, dict(h.vars)) for n, h in new.hosts.items()} == old["hosts"]
    assert dict(new.groups) == old["groups"]
    assert list(new.groups) == list(old["groups"])
    assert dict(new.vars) == old["vars"]


def test_group_vars_and_host_vars_directories(capfd: pytest.CaptureFixture[str]) -> None:
    inv = inventory.load(FIXTURES / "dirs")
    assert inv.path == FIXTURES / "dirs" / "hosts.yml"
    assert inv.groups == {
        "all": ("web1", "web2", "db1", "db2"),  # Ansible's order: a group's children first
        "web": ("web1", "web2"),
        "db": ("db2", "db1"),
        "db_primary": ("db1",),
    }
    web1, web2, db1, db2 = (inv.host(h) for h in ("web1", "web2", "db1", "db2"))
    # group_vars/web.yml beats the inventory's web vars; host_vars/web2.yml beats both
    assert (web1.vars["level"], web1.vars["ansible_user"], web1.vars["ansible_port"]) == (
        "group_vars-web",
        "webadmin",
        2201,
    )
    assert (web2.vars["level"], web2.vars["ansible_user"], web2.vars["ansible_port"]) == (
        "host_vars-web2",
        "alice",
        2202,
    )
    # deeper group (db_primary) beats its parent (group_vars/db/main.yml); host beats all
    assert (db1.vars["level"], db1.vars["db_role"], db1.vars["ansible_user"]) == (
        "inventory-db1",
        "primary",
        "deploy",
    )
    assert (db2.vars["level"], db2.vars["db_role"]) == ("group_vars-db", "replica")
    assert db1.groups == ("db", "db_primary")
    # group_vars/all.yml beats the inventory's all vars, and is part of Inventory.vars
    assert inv.vars["from_all_file"] == "group_vars-all" == db2.vars["from_all_file"]
    assert inv.vars["only_all_file"] == "group_vars-all"
    assert "inventory_file" not in db1.vars and "inventory_dir" not in db1.vars
    assert capfd.readouterr() == ("", "")


def test_ini_inventory_with_groups_children_and_vars() -> None:
    inv = inventory.load(FIXTURES / "ini")  # a directory holding hosts.ini
    assert inv.path.name == "hosts.ini"
    assert inv.groups == {
        "all": ("lb1", "lb2", "db1", "db2"),
        "lb": ("lb1", "lb2"),
        "db": ("db1", "db2"),
        "stack": ("lb1", "lb2", "db1", "db2"),
    }
    db1 = inv.host("db1")
    assert db1.address == "10.1.0.31" and db1.groups == ("db", "stack")
    assert (db1.vars["ansible_port"], db1.vars["postgresql_initial_primary"]) == (2222, "db1")
    assert (db1.vars["tier"], db1.vars["ansible_user"], db1.vars["vip"]) == (
        "stack",
        "deploy",
        "10.1.0.10",
    )
    assert inv.host("lb1").vars["keepalived_priority"] == 150
    assert inv.vars == {"ansible_user": "deploy", "vip": "10.1.0.10"}


@pytest.mark.parametrize("fixture", ["dirs", "ini"])
def test_host_vars_agree_with_ansible_inventory(fixture: str) -> None:
    inv = inventory.load(FIXTURES / fixture)
    exe = Path(sys.executable).with_name("ansible-inventory")
    out = subprocess.run(
        [str(exe), "-i", str(inv.path), "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    hostvars = json.loads(out)["_meta"]["hostvars"]
    assert {n: dict(h.vars) for n, h in inv.hosts.items()} == hostvars


def test_vault_encrypted_vars_load_without_a_password(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE", raising=False)
    inv = inventory.load(FIXTURES / "vault")
    h1 = inv.host("h1")
    assert "vault_db_password" not in h1.vars  # group_vars/all/vault.yml is left out
    assert h1.vars["db_password"] == "{{ vault_db_password }}"  # not templated
    assert h1.vars["inline_secret"] is inventory.VAULTED  # an inline !vault value
    assert str(inv.vars["inline_secret"]) == "<vault-encrypted>"
    assert inv.vars["ansible_user"] == "deploy"
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(
    "fixture, message",
    [
        ("bad-yaml", r"bad-yaml/hosts.yml: not valid YAML at line 4, column 1: did not find"),
        ("bad-ini", r"bad-ini/hosts.ini: not a valid inventory \(ini plugin: "),
    ],
)
def test_bad_inventory_is_one_line_naming_the_file(
    fixture: str, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InventoryError, match=message) as exc:
        inventory.load(FIXTURES / fixture)
    assert "\n" not in str(exc.value) and "[WARNING]" not in str(exc.value)
    assert capfd.readouterr() == ("", "")


def test_bad_group_vars_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "all:\n  hosts:\n    a: {ansible_host: 10.0.0.1}\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("x: [1\n")
    with pytest.raises(InventoryError, match=r"group_vars/all.yml: not valid YAML at line 2"):
        inventory.load(tmp_path)


def test_unparsable_file_of_any_name(tmp_path: Path) -> None:
    p = tmp_path / "inventory"
    p.write_text("just some text\n")
    with pytest.raises(
        InventoryError, match=r"inventory: not a valid inventory \(ini plugin: line 1"
    ):
        inventory.load(p)


def test_member_returns_the_host_or_names_the_group() -> None:
    inv = inventory.load("lab")
    assert inv.member("web2", "web") is inv.host("web2")
    with pytest.raises(InventoryError) as exc:
        inv.member("db1", "web")
    assert str(exc.value) == f"db1 is not in group web of {inv.path}; its hosts: web1, web2, web3"
    with pytest.raises(InventoryError, match="unknown host 'web9'.*known hosts: lb1"):
        inv.member("web9", "web")
    with pytest.raises(InventoryError, match="unknown group 'webz'"):
        inv.member("web1", "webz")


def test_load_lab_is_fast() -> None:
    inventory.load("lab")  # Ansible's imports, once per process
    started = time.perf_counter()
    inventory.load("lab")
    assert time.perf_counter() - started < 0.5


def _old_parse(data: dict[str, Any]) -> dict[str, Any]:
    """faultbook's own YAML reader before it read inventories through Ansible (reference)."""
    host_vars: dict[str, dict[str, Any]] = {}
    host_groups: dict[str, list[str]] = {}
    groups: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    group_depth: dict[str, int] = {}

    def walk(name: str, node: dict[str, Any], depth: int, ancestors: tuple[str, ...]) -> None:
        node = node or {}
        group_vars[name] = node.get("vars") or {}
        group_depth[name] = max(group_depth.get(name, 0), depth)
        groups.setdefault(name, [])
        for hname, hv in (node.get("hosts") or {}).items():
            host_vars.setdefault(hname, {}).update(hv or {})
            for g in (*ancestors, name):
                if hname not in groups.setdefault(g, []):
                    groups[g].append(hname)
                if g not in host_groups.setdefault(hname, []):
                    host_groups[hname].append(g)
        for cname, child in (node.get("children") or {}).items():
            walk(str(cname), child, depth + 1, (*ancestors, name))

    walk("all", data["all"], 0, ())
    hosts = {}
    for hname, hv in host_vars.items():
        eff: dict[str, Any] = {}
        for g in sorted(host_groups[hname], key=lambda g: group_depth[g]):
            eff.update(group_vars.get(g, {}))
        eff.update(hv)
        member_of = tuple(g for g in host_groups[hname] if g != "all")
        hosts[hname] = (str(eff.get("ansible_host", hname)), member_of, eff)
    return {
        "hosts": hosts,
        "groups": {g: tuple(m) for g, m in groups.items()},
        "vars": group_vars.get("all", {}),
    }
