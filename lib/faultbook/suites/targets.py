"""Role-based targets: a suite names "the primary", "a web node", "the VIP holder", never a
host, and the role is resolved against the inventory when its entry starts.

=============  ====================================================================
role           resolves to
=============  ====================================================================
primary        the one db host that is primary (``failover.cluster_state``)
standby        the standby a switchover would promote: the most advanced streaming
               synchronous standby of the primary (``failover.switchover_candidate``)
any-standby    the first db host, in inventory order, that is a standby
web            the first web host, in inventory order, that HAProxy has UP
               (``haproxy.failed_backends``)
vip-holder     the lb host that holds the VIP (``vip.vip_holder``)
lb             the first host of group lb
backup         the first host of group backup (the pgBackRest repository)
mon            the first host of group mon
=============  ====================================================================

``StackView`` asks the stack each question once, through functions a test
replaces (``StackView(inv, cluster_state=…, vip_holder=…, failed_web=…)``).
A role that cannot be resolved (no single primary, no lb holds the VIP, every
web node down) raises ``StackError``; the suite records the entry as skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from faultbook.errors import StackError
from faultbook.inventory import Inventory
from faultbook.suites.model import ROLES, Target


def _failed_web(inv: Inventory) -> list[str]:
    from faultbook.stack import haproxy

    return list(haproxy.failed_backends(inv).failed)


def _cluster(inv: Inventory) -> pd.DataFrame:
    from faultbook.stack import failover

    return failover.cluster_state(inv)


def _holder(inv: Inventory) -> str | None:
    from faultbook.stack import vip

    return vip.vip_holder(inv)


def _candidate(inv: Inventory, primary: str) -> str:
    from faultbook.stack import failover

    return failover.switchover_candidate(inv, primary)


@dataclass
class StackView:
    """What the roles are resolved against; each question asked at most once."""

    inv: Inventory
    cluster_state: Callable[[Inventory], pd.DataFrame] = _cluster
    vip_holder: Callable[[Inventory], str | None] = _holder
    failed_web: Callable[[Inventory], Iterable[str]] = _failed_web
    switchover_candidate: Callable[[Inventory, str], str] = _candidate
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def _ask(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def state(self) -> pd.DataFrame:
        return self._ask("state", lambda: self.cluster_state(self.inv))

    def primary(self) -> str:
        state = self.state()
        found = list(state.loc[state["role"] == "primary", "host"])
        if len(found) != 1:
            raise StackError(f"expected one primary, found {', '.join(found) or 'none'}")
        return str(found[0])


def resolve(role: str, view: StackView) -> str:
    """The host that plays ROLE now (StackError when none does)."""
    inv = view.inv
    if role == "primary":
        return view.primary()
    if role == "standby":
        primary = view.primary()
        return str(view._ask("candidate", lambda: view.switchover_candidate(inv, primary)))
    if role == "any-standby":
        state = view.state()
        standbys = set(state.loc[state["role"] == "standby", "host"])
        for h in inv.group("db"):
            if h.name in standbys:
                return h.name
        raise StackError("no db host is a standby")
    if role == "web":
        failed = set(view._ask("failed_web", lambda: list(view.failed_web(inv))))
        for h in inv.group("web"):
            if h.name not in failed:
                return h.name
        raise StackError(f"every web host is down in HAProxy ({', '.join(sorted(failed))})")
    if role == "vip-holder":
        holder = view._ask("holder", lambda: view.vip_holder(inv))
        if holder is None:
            raise StackError("no lb host holds the VIP")
        return str(holder)
    if role in ("lb", "backup", "mon"):
        hosts = inv.group(role) if role in inv.groups else []
        if not hosts:
            raise StackError(f"{inv.path} has no host in group {role}")
        return hosts[0].name
    raise StackError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")


def resolve_all(targets: Iterable[Target], view: StackView) -> dict[str, str]:
    """``{parameter: host}`` for an entry's targets; the message names the role that failed."""
    out = {}
    for t in targets:
        try:
            out[t.param] = resolve(t.role, view)
        except StackError as exc:
            raise StackError(f"target {{role: {t.role}}}: {exc}") from None
    return out
