"""The flow table the audit expects is the one the firewall template enforces.

The nftables template of the common role is rendered with Ansible's Templar for
every lab host; its accept rules, read back, must be exactly what
``flows.FlowTable`` says each (source address, port) gets."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

import pytest

from faultbook import inventory
from faultbook.errors import ConfigError
from faultbook.inventory import Inventory
from faultbook.security import flows

RULE = re.compile(r"^\s*ip saddr (\{[^}]*\}|\S+) (tcp|udp) dport (\{[^}]*\}|\d+) accept")


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return inventory.load("lab")


def _set(text: str) -> list[str]:
    return [t.strip() for t in text.strip("{} ").split(",") if t.strip()]


def render_nft(inv: Inventory, host: str) -> str:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    defaults, role_vars = flows.role_data()
    h = inv.host(host)
    hostvars = {n: {**x.vars, "ansible_host": x.address} for n, x in inv.hosts.items()}
    variables: dict[str, Any] = {
        **defaults,
        **h.vars,
        **role_vars,
        "inventory_hostname": h.name,
        "group_names": list(h.groups),
        "groups": {g: list(m) for g, m in inv.groups.items()},
        "hostvars": hostvars,
        "ansible_managed": "test",
    }
    src = (flows.ROLE / "templates" / "nftables.conf.j2").read_text()
    return str(Templar(loader=DataLoader(), variables=variables).template(src))


def rendered_pairs(text: str) -> set[tuple[str, str, int]]:
    """(source network, proto, port) for every accept rule of a rendered ruleset."""
    out = set()
    for line in text.splitlines():
        m = RULE.match(line)
        if m:
            for src in _set(m.group(1)):
                for port in _set(m.group(3)):
                    out.add((str(ipaddress.ip_network(src, strict=False)), m.group(2), int(port)))
    return out


def table_pairs(table: flows.FlowTable, host: str) -> set[tuple[str, str, int]]:
    h = table.inv.host(host)
    out = set()
    for f in table.flows_for(host):
        if f.lands_on(h.groups):
            for net in f.sources:
                for proto in ("tcp", "udp"):
                    for port in f.ports(proto):
                        out.add((str(net), proto, port))
    return out


def test_the_template_and_the_table_agree_on_every_lab_host(lab: Inventory) -> None:
    table = flows.load(lab)
    for host in lab.hosts:
        text = render_nft(lab, host)
        assert "accept" in text
        assert rendered_pairs(text) == table_pairs(table, host), host


def test_expected_ports_per_vantage(lab: Inventory) -> None:
    table = flows.load(lab)
    t = {x.name: x for x in flows.targets(lab)}
    ctrl, outside, mon1 = "10.77.0.1", "10.77.0.250", lab.host("mon1").address
    assert table.expected(t["lb1"], ctrl) == {22, 80, 443, 8404}
    assert table.expected(t["VIP"], ctrl) == {22, 80, 443, 8404}
    assert table.expected(t["web1"], ctrl) == {22}
    assert table.expected(t["db2"], ctrl) == {22, 5432}
    assert table.expected(t["restore1"], ctrl) == {22}
    assert table.expected(t["mon2"], ctrl) == {22, 9090, 9093}
    for x in t.values():  # a stranger on the lab bridge reaches nothing
        assert table.expected(x, outside) == set(), x.name
        assert table.expected(x, outside, "udp") == set(), x.name
    assert table.expected(t["mon2"], mon1, "udp") == {9094}
    assert table.expected(t["db1"], lab.host("web3").address) == {5432}
    assert table.expected(t["backup1"], lab.host("db1").address) == {8432}
    assert table.declared_ports("udp") == {9094}
    # every host ships its journal to each mon host, and nowhere else
    web1 = lab.host("web1").address
    assert table.expected(t["mon2"], web1) == {19532}
    assert table.expected(t["mon1"], lab.host("mon2").address) == {9090, 9093, 9094, 9100, 19532}
    assert all(
        19532 not in table.expected(x, web1) for x in t.values() if x.name not in ("mon1", "mon2")
    )


def _with_vars(inv: Inventory, **extra: Any) -> Inventory:
    hosts = {n: dataclasses.replace(h, vars={**h.vars, **extra}) for n, h in inv.hosts.items()}
    return dataclasses.replace(inv, hosts=hosts, vars={**inv.vars, **extra})


def test_inventory_overrides_and_extra_flows_are_resolved(lab: Inventory) -> None:
    inv = _with_vars(
        lab,
        common_lb_client_sources=["0.0.0.0/0"],
        common_nft_extra_flows=[
            {"name": "syslog-from-lb", "to": ["mon"], "from": ["lb"], "udp": [514]},
            {"name": "bastion", "to": ["all"], "from_addrs": ["10.77.0.240/29"], "tcp": [22]},
        ],
    )
    table = flows.load(inv)
    t = {x.name: x for x in flows.targets(inv)}
    assert table.expected(t["lb2"], "10.77.0.250") == {80, 443}
    assert table.expected(t["web1"], "10.77.0.241") == {22}
    assert table.expected(t["web1"], "10.77.0.250") == set()
    assert table.expected(t["mon1"], lab.host("lb1").address, "udp") == {514}
    for host in ("lb1", "mon1"):
        assert rendered_pairs(render_nft(inv, host)) == table_pairs(table, host)


def test_a_flow_that_does_not_resolve_is_named(lab: Inventory) -> None:
    inv = _with_vars(lab, common_ssh_sources=["{{ no_such_var }}"])
    with pytest.raises(ConfigError, match="ssh-from-controller"):
        flows.load(inv)
    inv = _with_vars(lab, common_lb_client_sources=["not-an-address"])
    with pytest.raises(ConfigError, match="'not-an-address' is not an address"):
        flows.load(inv)


def test_the_vip_takes_its_holders_groups(lab: Inventory) -> None:
    vip = [x for x in flows.targets(lab, "lb2") if x.name == "VIP"]
    assert vip and vip[0].host == "lb2" and vip[0].address == "10.77.0.10"
    assert vip[0].groups == ("lb",)


def test_the_flow_table_frame(lab: Inventory) -> None:
    df = flows.load(lab).table()
    row = df[df["flow"] == "monitoring-between-mon-hosts"].iloc[0]
    assert row["udp"] == "9094" and row["hosts"] == "mon1, mon2" and row["from"] == "mon"
    assert set(df["flow"]) >= {"ssh-from-controller", "web-to-db", "pgbackrest-to-repository"}
