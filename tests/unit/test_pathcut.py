"""path-cut: the nftables table it adds inside a host, its revert, and its checks."""

from __future__ import annotations

import subprocess

import pytest

from faultbook import inventory as inv_mod
from faultbook import ssh
from faultbook.drills import faults, pathcut
from faultbook.errors import FaultError, InventoryError, ParameterError
from faultbook.paths import LAB_INVENTORY


@pytest.fixture
def lab() -> inv_mod.Inventory:
    return inv_mod.load(LAB_INVENTORY)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    """Every command a fault runs, (host, command, sudo); answers rc 0 and "cut"."""
    seen: list[tuple[str, str, bool]] = []

    def run(inv: object, host: str, command: str, **kw: object) -> ssh.CommandResult:
        seen.append((host, command, bool(kw.get("sudo"))))
        return ssh.CommandResult(host, 0, "cut\n", "")

    monkeypatch.setattr(ssh, "run", run)
    return seen


def test_the_ruleset_drops_both_ways_before_the_host_firewall() -> None:
    rules = pathcut.ruleset(["10.77.0.31", "10.77.0.32"])
    assert "type filter hook input priority -200; policy accept;" in rules
    assert "type filter hook output priority -200; policy accept;" in rules
    assert "ip saddr { 10.77.0.31, 10.77.0.32 } drop" in rules
    assert "ip daddr { 10.77.0.31, 10.77.0.32 } drop" in rules
    assert rules.count("drop") == 2 and "policy drop" not in rules  # nothing else is cut


def test_the_ruleset_is_valid_nftables_syntax() -> None:
    """nft checks it without touching this machine's ruleset (-c), when nft is here."""
    try:
        r = subprocess.run(
            ["nft", "-c", "-f", "-"],
            input=pathcut.ruleset(["10.77.0.31"]),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except FileNotFoundError:
        pytest.skip("nft is not installed on this controller")
    if "Operation not permitted" in r.stderr:
        pytest.skip("nft -c needs CAP_NET_ADMIN here")
    assert r.returncode == 0, r.stderr


def test_inject_adds_the_table_with_the_peers_addresses_from_the_inventory(
    lab: inv_mod.Inventory, calls: list[tuple[str, str, bool]]
) -> None:
    f = faults.make("path-cut", lab, "web2", peers=["db1"], max_s=120)
    assert f.describe() == "path-cut between web2 and db1" and not f.game_day
    f.inject()
    ((host, cmd, sudo),) = calls
    assert host == "web2" and sudo
    assert cmd.startswith("nft list table inet faultbook_path_cut >/dev/null 2>&1 && {")
    assert "systemd-run --quiet --unit=faultbook-revert-path-cut --on-active=120s" in cmd
    assert "nft delete table inet faultbook_path_cut" in cmd  # what the timer runs
    assert "ip saddr { 10.77.0.31 } drop" in cmd and cmd.endswith("| nft -f -")
    f.revert()
    assert calls[-1][1] == (
        "systemctl stop faultbook-revert-path-cut.timer >/dev/null 2>&1 || true; "
        "nft delete table inet faultbook_path_cut 2>/dev/null || true"
    )


def test_a_cut_from_the_whole_web_tier_lists_every_peer(
    lab: inv_mod.Inventory, calls: list[tuple[str, str, bool]]
) -> None:
    f = faults.make("path-cut", lab, "db1", peers=["web1", "web2", "web3"])
    f.inject()
    assert "ip daddr { 10.77.0.21, 10.77.0.22, 10.77.0.23 } drop" in calls[0][1]


def test_rollback_asks_the_host(
    lab: inv_mod.Inventory, calls: list[tuple[str, str, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    g = faults.make(
        "path-cut", lab, "web2", **faults.make("path-cut", lab, "web2", peers=["db1"]).spec()
    )
    state = iter(["cut\n", "", ""])  # in effect, then the revert's output, then gone

    def run(inv: object, host: str, command: str, **kw: object) -> ssh.CommandResult:
        calls.append((host, command, True))
        return ssh.CommandResult(host, 0, next(state, ""), "")

    monkeypatch.setattr(ssh, "run", run)
    outcome, detail = g.rollback()
    assert outcome == "reverted" and detail.endswith("table faultbook_path_cut deleted on web2")


def test_a_second_cut_on_the_same_host_is_refused(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(inv: object, host: str, command: str, **kw: object) -> ssh.CommandResult:
        return ssh.CommandResult(
            host, 3, "", "table inet faultbook_path_cut exists: a path cut is already in effect\n"
        )

    monkeypatch.setattr(ssh, "run", run)
    f = faults.make("path-cut", lab, "web2", peers=["db1"])
    with pytest.raises(FaultError, match="a path cut is already in effect"):
        f.inject()
    assert f.injected_at is None


@pytest.mark.parametrize(
    ("peers", "error", "words"),
    [
        ([], ParameterError, "path-cut on web2 needs peers: a list of inventory hosts"),
        ("db1", ParameterError, "needs peers: a list"),
        (["db9"], InventoryError, "unknown host 'db9'"),
        (["web2"], ParameterError, "web2 cannot be cut from itself"),
    ],
)
def test_bad_peers_are_one_line(
    lab: inv_mod.Inventory, peers: object, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        faults.make("path-cut", lab, "web2", peers=peers)
