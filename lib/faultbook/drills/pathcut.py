"""``path-cut``: the network between one host and some others cut, both ways, with
nftables inside the host; every other path stays up (triage's inter-tier fault).

A host cut off entirely (``partition``) is lost to every runbook. A cut between two
tiers is the quieter failure: web2 cannot reach the primary while web1 and web3 can,
or the primary answers its standbys and the monitoring but no web node. Each tier's
own runbook then finds its tier healthy, and only the chain shows the broken link
(docs/runbooks/triage.md).

- inject: table ``inet faultbook_path_cut`` on the target, an input chain dropping
  packets from the peers' addresses and an output chain dropping packets to them,
  both at hook priority -200 (before the host's own firewall). A process on the
  target that connects to a peer gets EPERM at once; a peer that connects to the
  target waits out its own timeout. Refused when the table exists (one cut per host).
- self-revert: a transient timer (``_arm_revert``) deletes the table after max_s.
- revert / rollback: delete the table, disarm the timer; ``in_effect`` asks the host.

Peers are inventory hosts (their addresses from the inventory); never the target
itself. The controller is not a host of the inventory, so its SSH session survives.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import ClassVar

from faultbook.drills.faults import Fault, register
from faultbook.errors import ParameterError

TABLE = "faultbook_path_cut"


def ruleset(addresses: list[str]) -> str:
    """The nftables table dropping every packet to and from ADDRESSES."""
    peers = ", ".join(addresses)
    return (
        f"table inet {TABLE} {{\n"
        "  chain input {\n"
        "    type filter hook input priority -200; policy accept;\n"
        f"    ip saddr {{ {peers} }} drop\n"
        "  }\n"
        "  chain output {\n"
        "    type filter hook output priority -200; policy accept;\n"
        f"    ip daddr {{ {peers} }} drop\n"
        "  }\n"
        "}\n"
    )


@register
@dataclass
class PathCut(Fault):
    """Cut the paths between the host and PEERS, both ways (nftables inside the host)."""

    kind: ClassVar[str] = "path-cut"
    reverts_itself: ClassVar[bool] = True
    # Not a game-day row yet: no drill offers it; triage's integration test makes it.
    game_day: ClassVar[bool] = False
    peers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.peers or not isinstance(self.peers, list):
            raise ParameterError(
                f"path-cut on {self.target} needs peers: a list of inventory hosts, "
                f"got {self.peers!r}"
            )
        for p in self.peers:
            self.inv.host(p)  # InventoryError naming the known hosts
        if self.target in self.peers:
            raise ParameterError(f"path-cut: {self.target} cannot be cut from itself")

    def addresses(self) -> list[str]:
        return [self.inv.host(p).address for p in self.peers]

    def describe(self) -> str:
        return f"path-cut between {self.target} and {', '.join(self.peers)}"

    def inject_command(self) -> str:
        undo = f"nft delete table inet {TABLE}"
        busy = f"table inet {TABLE} exists: a path cut is already in effect"
        return (
            f"nft list table inet {TABLE} >/dev/null 2>&1 && "
            f"{{ echo '{busy}' >&2; exit 3; }}; "
            f"{self._arm_revert('path-cut', undo)}; "
            f"printf %s {shlex.quote(ruleset(self.addresses()))} | nft -f -"
        )

    def revert_command(self) -> str:
        return (
            f"{self._disarm_revert('path-cut')}; nft delete table inet {TABLE} 2>/dev/null || true"
        )

    def _inject(self) -> None:
        self._ssh(self.inject_command())

    def _revert(self) -> None:
        self._ssh(self.revert_command())

    def in_effect(self) -> bool:
        out = self._ssh(f"nft list table inet {TABLE} >/dev/null 2>&1 && echo cut || true")
        return out.strip() == "cut"

    def _settle(self) -> None:
        self._ssh(self._disarm_revert("path-cut"))

    def _clear_state(self) -> str:
        return f"no table {TABLE} on {self.target}"

    def _reverted_state(self) -> str:
        return f"table {TABLE} deleted on {self.target}"
