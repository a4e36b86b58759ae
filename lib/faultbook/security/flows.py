"""The flow table, read from the one place the firewall is generated from.

``common_nft_flows`` (playbooks/roles/common/vars/main.yml) plus the
inventory's ``common_nft_extra_flows`` are what the nftables template
(roles/common/templates/nftables.conf.j2) turns into accept rules. This module
reads the same data and answers the question the template answers for the
kernel: *which ports of host H accept a connection from address A?*

Resolution follows the template, step by step:

- a flow lands on H when ``to`` holds ``all`` or one of H's groups;
- its sources are ``from_addrs`` (literal addresses or CIDRs, after Ansible
  templating) plus the ``ansible_host`` of every member of the ``from`` groups;
- ``{{ ... }}`` expressions (``common_ssh_sources``, ``common_lb_client_sources``,
  ``controller_ip``) are rendered with Ansible's own Templar, over the role's
  defaults overlaid by H's inventory variables overlaid by the role's vars:
  Ansible's precedence for role defaults < inventory < role vars.

The VIP is an address of whichever load balancer holds it; the template's rules
do not look at the destination address, so the VIP accepts what its holder does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from faultbook.errors import ConfigError
from faultbook.inventory import Inventory
from faultbook.paths import PLAYBOOKS_DIR

ROLE = PLAYBOOKS_DIR / "roles" / "common"
PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True)
class Flow:
    """One rule of the flow table, with its sources resolved to networks."""

    name: str
    to: tuple[str, ...]
    sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    source_names: tuple[str, ...]  # what the table says: groups and literal addresses
    tcp: tuple[int, ...] = ()
    udp: tuple[int, ...] = ()
    proto: int | None = None

    def lands_on(self, groups: Iterable[str]) -> bool:
        return "all" in self.to or bool(set(self.to) & set(groups))

    def admits(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in self.sources)

    def ports(self, proto: str) -> tuple[int, ...]:
        return self.tcp if proto == "tcp" else self.udp if proto == "udp" else ()


@dataclass(frozen=True)
class Target:
    """An address to scan: a host, or the VIP (with its holder's groups)."""

    name: str
    address: str
    groups: tuple[str, ...]
    host: str  # the inventory host whose variables and firewall apply


@dataclass
class FlowTable:
    """Every host's resolved flows: ``expected(target, source, proto)`` is the port set."""

    inv: Inventory
    per_host: dict[str, list[Flow]] = field(default_factory=dict)

    def flows_for(self, host: str) -> list[Flow]:
        return self.per_host[host]

    def expected(self, target: Target, source: str, proto: str = "tcp") -> set[int]:
        """Ports of ``target`` that accept ``proto`` connections from ``source``."""
        return {
            p
            for f in self.per_host[target.host]
            if f.lands_on(target.groups) and f.admits(source)
            for p in f.ports(proto)
        }

    def sources(self, host: str, port: int, proto: str = "tcp") -> list[Flow]:
        """The flows that open ``port`` on ``host`` (for pg_hba and socket checks)."""
        h = self.inv.host(host)
        return [f for f in self.per_host[host] if f.lands_on(h.groups) and port in f.ports(proto)]

    def declared_ports(self, proto: str) -> set[int]:
        """Every port any flow opens, on any host (UDP scans probe at least these)."""
        return {p for flows in self.per_host.values() for f in flows for p in f.ports(proto)}

    def table(self) -> pd.DataFrame:
        """The flow table as people read it: one row per flow (documentation, the runbook)."""
        seen: dict[str, dict[str, Any]] = {}
        for host, flows in self.per_host.items():
            for f in flows:
                if not f.lands_on(self.inv.host(host).groups):
                    continue
                row = seen.setdefault(
                    f.name,
                    {
                        "flow": f.name,
                        "from": ", ".join(f.source_names),
                        "to": ", ".join(f.to),
                        "tcp": ", ".join(map(str, f.tcp)),
                        "udp": ", ".join(map(str, f.udp)),
                        "proto": "" if f.proto is None else str(f.proto),
                        "hosts": [],
                    },
                )
                row["hosts"].append(host)
        rows = [{**r, "hosts": ", ".join(r["hosts"])} for r in seen.values()]
        return pd.DataFrame(rows, columns=["flow", "from", "to", "tcp", "udp", "proto", "hosts"])


def _yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of variables")
    return doc


def role_data(role: Path = ROLE) -> tuple[dict[str, Any], dict[str, Any]]:
    """The common role's defaults and vars (where ``common_nft_flows`` lives)."""
    return _yaml(role / "defaults" / "main.yml"), _yaml(role / "vars" / "main.yml")


def _templar(variables: Mapping[str, Any]) -> Any:
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    return Templar(loader=DataLoader(), variables=dict(variables))


def _render(templar: Any, value: Any, where: str) -> Any:
    try:
        return templar.template(value)
    except Exception as exc:  # noqa: BLE001 - Ansible's errors have no common useful base
        msg = str(getattr(exc, "message", exc)).splitlines()[0]
        raise ConfigError(f"flow table: {where} does not render: {msg}") from None


def _networks(
    values: Iterable[Any], where: str
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(str(v).strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"flow table: {where}: {v!r} is not an address or CIDR (from_addrs and "
                "ansible_host must be IP addresses for the audit to resolve them)"
            ) from None
    return out


def _ports(value: Any, where: str) -> tuple[int, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    try:
        ports = tuple(int(p) for p in items)
    except (TypeError, ValueError):
        raise ConfigError(f"flow table: {where}: ports must be integers, got {value!r}") from None
    if any(not 0 < p < 65536 for p in ports):
        raise ConfigError(f"flow table: {where}: a port is outside 1-65535: {value!r}")
    return ports


def resolve_flow(raw: Mapping[str, Any], inv: Inventory, templar: Any) -> Flow:
    """One flow of the role's list, its ``{{ }}`` rendered and groups resolved."""
    name = str(raw.get("name", "?"))
    where = f"flow {name!r}"
    rendered = _render(templar, dict(raw), where)
    addrs = rendered.get("from_addrs") or []
    if isinstance(addrs, str):
        addrs = [addrs]
    names = [str(a) for a in addrs]
    peers = []
    for group in rendered.get("from") or []:
        members = inv.groups.get(str(group), ())
        peers += [inv.hosts[m].address for m in members]
        names.append(str(group))
    to = rendered.get("to") or []
    return Flow(
        name=name,
        to=tuple(str(t) for t in (to if isinstance(to, list) else [to])),
        sources=tuple(_networks([*addrs, *peers], where)),
        source_names=tuple(names),
        tcp=_ports(rendered.get("tcp"), where),
        udp=_ports(rendered.get("udp"), where),
        proto=int(rendered["proto"]) if rendered.get("proto") is not None else None,
    )


def load(inv: Inventory, role: Path = ROLE) -> FlowTable:
    """Every host's flows, resolved with that host's variables (ConfigError when a flow
    does not render or names something that is not an address)."""
    defaults, role_vars = role_data(role)
    if "common_nft_flows" not in role_vars:
        raise ConfigError(f"{role}/vars/main.yml has no common_nft_flows")
    table = FlowTable(inv)
    for h in inv.hosts.values():
        variables = {
            **defaults,
            **{k: v for k, v in h.vars.items()},
            **role_vars,
            "inventory_hostname": h.name,
            "group_names": list(h.groups),
            "groups": {g: list(m) for g, m in inv.groups.items()},
        }
        templar = _templar(variables)
        raw = list(role_vars["common_nft_flows"]) + list(
            _render(
                templar, variables.get("common_nft_extra_flows") or [], "common_nft_extra_flows"
            )
        )
        table.per_host[h.name] = [resolve_flow(f, inv, templar) for f in raw]
    return table


def targets(inv: Inventory, vip_holder: str | None = None) -> list[Target]:
    """Every host, then the VIP (when the inventory names one) with its holder's groups.

    Without a known holder the VIP is taken as a member of group ``lb`` (every load
    balancer gets the same rules)."""
    out = [Target(h.name, h.address, tuple(h.groups), h.name) for h in inv.hosts.values()]
    vip = inv.vars.get("vip")
    if vip:
        holder = vip_holder or next(iter(inv.groups.get("lb", ())), None)
        if holder is not None:
            out.append(Target("VIP", str(vip), tuple(inv.hosts[holder].groups), holder))
    return out
