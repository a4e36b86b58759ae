"""``exposed-listener``: a test service on one host, reachable through a hole in its firewall.

The security audit's drill opens one thing on purpose and shows that the
exposure check names it. The fault is what a careless change looks like: a
process listening on every address, and an nftables rule that lets anyone
reach its port.

- inject: a transient unit ``faultbook-listener-PORT`` (``systemd-run``) runs a
  small Python TCP server on 0.0.0.0:PORT that accepts and closes; an accept
  rule for the port, commented ``faultbook-exposed-listener``, is inserted at
  the top of the ``inet faultbook`` input chain. Refused when something already
  listens on the port.
- self-revert: the unit has ``RuntimeMaxSec=max_s``, and a transient timer
  (``_arm_revert``) deletes the rule after max_s, so a drill that dies leaves
  nothing open for long.
- revert / rollback: stop the unit, delete every rule with that comment,
  disarm the timer. ``in_effect`` asks the host (unit active or rule present).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import ClassVar

from faultbook.drills.faults import Fault, register
from faultbook.errors import FaultError, ParameterError

TABLE = "inet faultbook"
CHAIN = "input"
COMMENT = "faultbook-exposed-listener"
_SERVER = (
    "import socket\n"
    "s = socket.create_server(('0.0.0.0', {port}), reuse_port=False)\n"
    "while True:\n"
    "    s.accept()[0].close()\n"
)


def delete_rules_cmd() -> str:
    """Delete every rule carrying the fault's comment (by handle); quiet when none."""
    return (
        f"for h in $(nft -a list chain {TABLE} {CHAIN} 2>/dev/null | "
        f"sed -n 's/.*comment \"{COMMENT}\" # handle \\([0-9]*\\).*/\\1/p'); do "
        f"nft delete rule {TABLE} {CHAIN} handle $h; done"
    )


@register
@dataclass
class ExposedListener(Fault):
    """A test TCP listener on PORT with a firewall hole for it (the audit's drill)."""

    kind: ClassVar[str] = "exposed-listener"
    reverts_itself: ClassVar[bool] = True
    game_day: ClassVar[bool] = False
    port: int = 18123

    def __post_init__(self) -> None:
        super().__post_init__()
        if (
            isinstance(self.port, bool)
            or not isinstance(self.port, int)
            or not 1024 < self.port < 65536
        ):
            raise ParameterError(f"exposed-listener needs a port in 1025-65535, got {self.port!r}")

    @property
    def unit(self) -> str:
        return f"faultbook-listener-{self.port}"

    def describe(self) -> str:
        return f"exposed-listener on {self.target} tcp/{self.port}"

    def _inject(self) -> None:
        busy = self._ssh(f"ss -Htln 'sport = :{self.port}' | head -1").strip()
        if busy:
            raise FaultError(f"{self.describe()}: something already listens there: {busy}")
        server = _SERVER.format(port=self.port)
        undo = f"systemctl stop {self.unit}.service; {delete_rules_cmd()}"
        self._ssh(
            f"{self._arm_revert('listener', undo)}; "
            f"systemctl reset-failed {self.unit}.service >/dev/null 2>&1; "
            f"systemd-run --quiet --unit={self.unit} -p RuntimeMaxSec={int(self.max_s)} "
            f"/usr/bin/python3 -c {shlex.quote(server)} && "
            f"nft insert rule {TABLE} {CHAIN} tcp dport {self.port} accept comment '\"{COMMENT}\"'"
        )
        # The listener binds within a moment; wait so a scan right after sees it.
        self._ssh(
            f"for i in $(seq 50); do ss -Htln 'sport = :{self.port}' | grep -q . && exit 0; "
            "sleep 0.1; done; exit 1"
        )

    def _revert(self) -> None:
        self._ssh(
            f"{self._disarm_revert('listener')}; "
            f"systemctl stop {self.unit}.service >/dev/null 2>&1; "
            f"systemctl reset-failed {self.unit}.service >/dev/null 2>&1; {delete_rules_cmd()}"
        )

    def in_effect(self) -> bool:
        out = self._ssh(
            f"systemctl is-active -q {self.unit}.service && echo unit; "
            f"nft list chain {TABLE} {CHAIN} 2>/dev/null | grep -q '{COMMENT}' && echo rule; true"
        )
        return bool(out.strip())

    def _settle(self) -> None:
        self._ssh(self._disarm_revert("listener"))

    def _clear_state(self) -> str:
        return f"nothing listens on {self.port} and no rule opens it"

    def _reverted_state(self) -> str:
        return f"{self.unit} stopped and its firewall rule deleted"
