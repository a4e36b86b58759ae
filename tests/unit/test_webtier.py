"""faultbook.webtier without a lab: canned stats CSV, `ip addr` output, journal lines, fakes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from faultbook import ansible, errors, secrets, ssh
from faultbook import inventory as inv_mod
from faultbook.errors import ConfigError, InventoryError, ParameterError, PrometheusError, SSHError
from faultbook.paths import LAB_INVENTORY, PLAYBOOKS_DIR
from faultbook.stack import haproxy, vip

HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,"
)
# Real rows from the lab's lb1 (columns after check_duration cut off).
STATS_CSV = "\n".join(
    [
        HEADER,
        "https,FRONTEND,,,0,34,4096,184,1655315,4899490,0,0,0,,,,,OPEN,,,,,,,,,1,3,0,,,,0,1,0,35,,,,",
        "web,web1,0,0,2,11,12,5700,562791,1602728,,0,,0,0,0,0,UP,1,1,0,0,0,152,0,,1,4,1,,5700,,2,0,"
        ",407,L7OK,200,55,",
        "web,web2,0,0,0,11,12,6032,553363,1686905,,0,,0,0,0,0,DOWN,1,1,0,3,1,2,9,,1,4,2,,6032,,2,1,"
        ",412,L7STS,503,6,",
        "web,web3,0,0,0,11,12,5749,539161,1609857,,0,,0,0,0,0,DRAIN,1,1,0,0,0,152,0,,1,4,3,,5749,,2,"
        "1,,329,L7OK,200,9,",
        "web,BACKEND,0,0,0,33,410,17481,1655315,4899490,0,0,,0,0,0,0,UP,3,3,0,,0,152,0,,1,4,0,,17481,"
        ",1,1,,844,,,,",
        "web_alive,web1,0,0,0,0,12,0,0,0,,0,,0,0,0,0,UP 1/2,1,1,0,0,0,152,0,,1,5,1,,0,,2,0,,0,L7OK,"
        "200,1,",
        "web_alive,web2,0,0,0,0,12,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,152,0,,1,5,2,,0,,2,0,,0,L7OK,200,2,",
        "web_alive,web3,0,0,0,0,12,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,152,0,,1,5,3,,0,,2,0,,0,,,,",
        "stats,FRONTEND,,,2,3,4096,155,51669,10851921,0,0,0,,,,,OPEN,,,,,,,,,1,6,0,,,,0,2,0,2,,,,",
        "",
    ]
)
ALL_UP_CSV = "\n".join(
    [HEADER]
    + [
        f"{be},web{i},0,0,0,0,12,10,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,1,0,,1,4,{i},,10,,2,0,,1,L7OK,200,1,"
        for be in ("web", "web_alive")
        for i in (1, 2, 3)
    ]
)

IP_ADDR_MASTER = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "2: host0    inet 10.77.0.11/24 brd 10.77.0.255 scope global host0\\       valid_lft forever"
    " preferred_lft forever\n"
    "2: host0    inet 10.77.0.10/24 scope global secondary host0\\       valid_lft forever"
    " preferred_lft forever\n"
)
IP_ADDR_BACKUP = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "2: host0    inet 10.77.0.12/24 brd 10.77.0.255 scope global host0\\       valid_lft forever"
    " preferred_lft forever\n"
)
# A look-alike address must not count as the VIP.
IP_ADDR_LOOKALIKE = "2: host0    inet 10.77.0.100/24 brd 10.77.0.255 scope global host0\n"

JOURNAL = """\
2026-11-27T18:06:05.771393+0000 lb1 systemd[1]: Starting keepalived.service - Keepalive Daemon...
2026-11-27T18:06:05.785237+0000 lb1 Keepalived[776]: Starting Keepalived v2.2.7 (01/16,2022)
2026-11-27T18:06:05.810209+0000 lb1 Keepalived_vrrp[777]: (faultbook_vip) Entering BACKUP STATE
2026-11-27T18:06:06.664115+0000 lb1 Keepalived_vrrp[777]: (faultbook_vip) Entering MASTER STATE
2026-11-27T18:20:01.000001+0000 lb1 Keepalived_vrrp[777]: (faultbook_vip) Entering FAULT STATE
2026-11-27T18:20:01.5+0000 lb1 Keepalived_vrrp[777]: Script `chk_haproxy` now returning 7
"""


@pytest.fixture
def lab() -> inv_mod.Inventory:
    return inv_mod.load(LAB_INVENTORY)


@pytest.fixture
def no_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(haproxy, "_stats_password", lambda inv: "not-a-real-password")


@pytest.fixture
def playbooks(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake(playbook: str, inventory: Any = None, **kw: Any) -> ansible.PlaybookResult:
        calls.append({"playbook": playbook, **kw})
        return ansible.PlaybookResult(playbook, "successful", 0, {}, 0.1)

    monkeypatch.setattr(ansible, "run_playbook", fake)
    return calls


def cmd(host: str, stdout: str, rc: int = 0) -> ssh.CommandResult:
    return ssh.CommandResult(host, rc, stdout, "")


# -------------------------------------------------------------------- stats CSV
def test_parse_stats_csv_keeps_servers_only() -> None:
    rows = haproxy.parse_stats_csv(STATS_CSV, "lb1")
    assert [(r["backend"], r["server"]) for r in rows] == [
        ("web", "web1"),
        ("web", "web2"),
        ("web", "web3"),
        ("web_alive", "web1"),
        ("web_alive", "web2"),
        ("web_alive", "web3"),
    ]
    web1 = rows[0]
    assert web1 == {
        "lb": "lb1",
        "backend": "web",
        "server": "web1",
        "status": "UP",
        "weight": 1,
        "check_status": "L7OK",
        "current_sessions": 2,
        "total_sessions": 5700,
        "error": "",
    }
    assert [r["status"] for r in rows] == ["UP", "DOWN", "DRAIN", "UP 1/2", "UP", "MAINT"]
    assert rows[1]["check_status"] == "L7STS"


def test_parse_stats_csv_refuses_a_login_page() -> None:
    with pytest.raises(ValueError, match="not HAProxy stats CSV"):
        haproxy.parse_stats_csv("<html>401 Unauthorized</html>", "lb1")


@pytest.mark.parametrize(
    "status, up",
    [("UP", True), ("UP 1/2", True), ("DOWN", False), ("DOWN 1/2", False), ("DRAIN", False),
     ("MAINT", False), ("no check", False), ("", False)],
)  # fmt: skip
def test_is_up(status: str, up: bool) -> None:
    assert haproxy.is_up(status) is up


def test_a_down_lb_is_a_row_not_an_exception(
    lab: inv_mod.Inventory, no_vault: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []

    def fetch(url: str, user: str, password: str, timeout: float) -> str:
        seen.append((url, user))
        if "10.77.0.12" in url:
            raise requests.ConnectTimeout("timed out")
        return STATS_CSV

    monkeypatch.setattr(haproxy, "_fetch_stats", fetch)
    df = haproxy.haproxy_servers(lab)
    assert list(df.columns) == list(haproxy.SERVER_COLUMNS)
    assert sorted(seen) == [
        ("http://10.77.0.11:8404", "admin"),
        ("http://10.77.0.12:8404", "admin"),
    ]
    assert len(df[df.lb == "lb1"]) == 6
    down = df[df.lb == "lb2"]
    assert len(down) == 1
    row = down.iloc[0]
    assert row.status == "unreachable" and row.server == "" and "did not answer" in row.error
    assert pd.isna(row.total_sessions)
    assert str(df.total_sessions.dtype) == "Int64"


def test_a_refused_password_is_an_error_row_without_the_password(
    lab: inv_mod.Inventory, no_vault: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Answer:
        status_code = 401
        text = "<html>401</html>"

    monkeypatch.setattr(requests.Session, "get", lambda self, url, **kw: Answer())
    df = haproxy.haproxy_servers(lab)
    assert set(df.status) == {"error"}
    assert all("HTTP 401" in e and "vault_haproxy_stats_password" in e for e in df.error)
    assert not df.astype(str).apply(lambda c: c.str.contains("not-a-real-password")).any().any()


def test_the_stats_session_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Answer:
        status_code = 200
        text = STATS_CSV

    def get(self: requests.Session, url: str, **kw: Any) -> Answer:
        seen.update(trust_env=self.trust_env, url=url, auth=kw["auth"])
        return Answer()

    monkeypatch.setattr(requests.Session, "get", get)
    assert haproxy._fetch_stats("http://10.77.0.11:8404", "admin", "pw", 1.0) == STATS_CSV
    assert seen == {
        "trust_env": False,
        "url": "http://10.77.0.11:8404/stats;csv",
        "auth": ("admin", "pw"),
    }


def test_a_vault_without_the_password_is_a_config_error(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "read_vault", lambda inv: {})
    with pytest.raises(ConfigError, match="vault_haproxy_stats_password"):
        haproxy.haproxy_servers(lab)


# ------------------------------------------------------------ failed backends
def frame(*parts: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p], columns=list(haproxy.SERVER_COLUMNS))


def test_stats_not_up_names_lb_and_status() -> None:
    df = frame(
        haproxy.parse_stats_csv(STATS_CSV, "lb1"),
        [haproxy._lb_row("lb2", "unreachable", "no answer")],
    )
    bad, unanswered = haproxy.stats_not_up(df, "web", ["web1", "web2", "web3"])
    assert bad == {"web2": {"lb1": "DOWN"}, "web3": {"lb1": "DRAIN"}}
    assert unanswered == ("lb2",)
    bad, _ = haproxy.stats_not_up(df, "web_alive", ["web1", "web2", "web3"])
    assert bad == {"web3": {"lb1": "MAINT"}}


def test_a_server_missing_from_a_backend_is_absent() -> None:
    rows = [r for r in haproxy.parse_stats_csv(ALL_UP_CSV, "lb1") if r["server"] != "web2"]
    bad, _ = haproxy.stats_not_up(frame(rows), "web", ["web1", "web2", "web3"])
    assert bad == {"web2": {"lb1": "absent"}}


def series(instance: str, server: str, state: str) -> dict[str, Any]:
    labels = {"__name__": "haproxy_server_status", "job": "haproxy", "proxy": "web"}
    return {
        "metric": {**labels, "instance": instance, "server": server, "state": state},
        "value": [0, "1"],
    }


def test_prometheus_not_up_maps_instances_to_lb_hosts(lab: inv_mod.Inventory) -> None:
    results = [
        series("lb1", "web1", "UP"),
        series("lb1", "web2", "DOWN"),
        series("10.77.0.12:8404", "web2", "MAINT"),
        series("lb2", "web1", "UP"),
    ]
    assert haproxy.prometheus_not_up(results, lab) == {"web2": {"lb1": "DOWN", "lb2": "MAINT"}}


def test_failed_backends_says_which_source_saw_what(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = frame(
        haproxy.parse_stats_csv(STATS_CSV, "lb1"), haproxy.parse_stats_csv(ALL_UP_CSV, "lb2")
    )
    monkeypatch.setattr(haproxy, "haproxy_servers", lambda inv, timeout=3.0: df)
    exprs: list[str] = []

    def query(inv: inv_mod.Inventory, expr: str, timeout: float) -> list[dict[str, Any]]:
        exprs.append(expr)
        return [series("lb1", "web2", "DOWN"), series("lb1", "web1", "UP")]

    monkeypatch.setattr(haproxy, "_prom_query", query)
    fb = haproxy.failed_backends(lab)
    assert exprs == ['haproxy_server_status{job="haproxy",proxy="web"} == 1']
    assert list(fb) == ["web2", "web3"] and len(fb) == 2 and "web3" in fb and "web1" not in fb
    assert fb.stats == {"web2": {"lb1": "DOWN"}, "web3": {"lb1": "DRAIN"}}
    assert fb.prometheus == {"web2": {"lb1": "DOWN"}}
    assert not fb.sources_agree
    assert fb.summary() == "backend web: not UP: web2 (lb1: DOWN); web3 (lb1: DRAIN)"


def test_failed_backends_records_a_prometheus_outage(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = frame(
        haproxy.parse_stats_csv(ALL_UP_CSV, "lb1"), haproxy.parse_stats_csv(ALL_UP_CSV, "lb2")
    )
    monkeypatch.setattr(haproxy, "haproxy_servers", lambda inv, timeout=3.0: df)

    def query(inv: inv_mod.Inventory, expr: str, timeout: float) -> list[dict[str, Any]]:
        raise PrometheusError("Prometheus at http://10.77.0.51:9090 did not answer", transient=True)

    monkeypatch.setattr(haproxy, "_prom_query", query)
    fb = haproxy.failed_backends(lab)
    assert list(fb) == []
    assert (
        fb.prometheus_error
        == "PrometheusError: Prometheus at http://10.77.0.51:9090 did not answer"
    )
    assert fb.summary().startswith("every server of backend web is UP; Prometheus: PrometheusError")


# ------------------------------------------------------------------- procedures
@pytest.mark.parametrize(
    "call",
    [haproxy.drain, haproxy.enable, haproxy.recover],
)
def test_web_procedures_refuse_a_host_outside_group_web(
    lab: inv_mod.Inventory, playbooks: list[dict[str, Any]], call: Any
) -> None:
    for bad in ("db1", "web9"):
        with pytest.raises(InventoryError) as exc:
            call(lab, bad)
        assert bad in str(exc.value) and "web1, web2, web3" in str(exc.value)
        assert "\n" not in str(exc.value)
    assert playbooks == []


def test_lb_recover_refuses_a_web_host(
    lab: inv_mod.Inventory, playbooks: list[dict[str, Any]]
) -> None:
    with pytest.raises(InventoryError, match="web1 is not in group lb.*lb1, lb2"):
        vip.lb_recover(lab, "web1")
    assert playbooks == []


def test_drain_refuses_an_unknown_state(
    lab: inv_mod.Inventory, playbooks: list[dict[str, Any]]
) -> None:
    with pytest.raises(ParameterError, match="'offline' is not one of: drain, maint"):
        haproxy.drain(lab, "web2", state="offline")
    assert playbooks == []


def test_procedures_run_their_playbooks(
    lab: inv_mod.Inventory, playbooks: list[dict[str, Any]]
) -> None:
    haproxy.drain(lab, "web2")
    haproxy.drain(lab, "web2", state="maint")
    haproxy.enable(lab, "web2")
    haproxy.recover(lab, "web3", force_restart=True)
    vip.lb_recover(lab, "lb2")
    assert playbooks == [
        {
            "playbook": "web_drain.yml",
            "extravars": {"web_host": "web2", "haproxy_drain_state": "drain"},
        },
        {
            "playbook": "web_drain.yml",
            "extravars": {"web_host": "web2", "haproxy_drain_state": "maint"},
        },
        {"playbook": "web_enable.yml", "extravars": {"web_host": "web2"}},
        {
            "playbook": "web_recover.yml",
            "extravars": {"web_host": "web3", "ledger_recover_force_restart": True},
            "limit": "web3",
        },
        {"playbook": "lb_recover.yml", "extravars": {"lb_host": "lb2"}, "limit": "lb2"},
    ]
    for p in {c["playbook"] for c in playbooks}:
        assert (PLAYBOOKS_DIR / p).is_file()


# ------------------------------------------------------------------------ VIP
def fake_ssh(
    monkeypatch: pytest.MonkeyPatch, answers: dict[str, ssh.CommandResult | SSHError]
) -> list[str]:
    commands: list[str] = []

    def run_many(inv: Any, hosts: Any, command: str, **kw: Any) -> dict[str, Any]:
        commands.append(command)
        return {h: answers[h] for h in hosts}

    monkeypatch.setattr(ssh, "run_many", run_many)
    return commands


def test_ipv4_addresses() -> None:
    assert vip.ipv4_addresses(IP_ADDR_MASTER) == {"127.0.0.1", "10.77.0.11", "10.77.0.10"}
    assert vip.ipv4_addresses(IP_ADDR_LOOKALIKE) == {"10.77.0.100"}


def test_vip_holder_is_the_lb_with_the_vip(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = fake_ssh(
        monkeypatch, {"lb1": cmd("lb1", IP_ADDR_BACKUP), "lb2": cmd("lb2", IP_ADDR_MASTER)}
    )
    assert vip.vip_holder(lab) == "lb2"
    assert commands == ["ip -o -4 addr show"]


def test_nobody_holds_the_vip(lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ssh(
        monkeypatch,
        {
            "lb1": cmd("lb1", IP_ADDR_LOOKALIKE),
            "lb2": SSHError("lb2", "no answer on 10.77.0.12:22"),
        },
    )
    assert vip.vip_holder(lab) is None


def test_two_holders_are_named(lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_ssh(monkeypatch, {"lb1": cmd("lb1", IP_ADDR_MASTER), "lb2": cmd("lb2", IP_ADDR_MASTER)})
    with pytest.raises(errors.WebTierError, match="10.77.0.10 is held by lb1 and lb2 at once"):
        vip.vip_holder(lab)


def test_vip_lines_name_the_address_and_its_device() -> None:
    assert vip.vip_lines(IP_ADDR_MASTER, "10.77.0.10") == [("10.77.0.10/24", "host0")]
    assert vip.vip_lines(IP_ADDR_LOOKALIKE, "10.77.0.10") == []


def stand_down_world(
    monkeypatch: pytest.MonkeyPatch, claims: list[bool | None], fence_rc: int = 0
) -> list[str]:
    """claims_vip answers CLAIMS in turn (the last one for ever); ssh.run answers the
    addresses with the VIP and records every command."""
    seen: list[str] = []
    left = list(claims)

    def claims_vip(inv: Any, host: str, timeout: float = 5.0) -> bool | None:
        return left.pop(0) if len(left) > 1 else left[0]

    def run(inv: Any, host: str, command: str, **kw: Any) -> ssh.CommandResult:
        seen.append(command)
        if command.startswith("ip -o"):
            return cmd(host, IP_ADDR_MASTER)
        left[:] = [False]  # fenced: it no longer claims the VIP
        return cmd(host, "", rc=fence_rc)

    monkeypatch.setattr(vip, "claims_vip", claims_vip)
    monkeypatch.setattr(ssh, "run", run)
    return seen


@pytest.mark.parametrize(
    "claims",
    [
        [True, True, False],  # cut off: it gives the VIP up by itself
        [None],  # off, or its addresses unreadable: it holds nothing
    ],
)
def test_an_lb_that_no_longer_claims_the_vip_is_not_fenced(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch, claims: list[bool | None]
) -> None:
    seen = stand_down_world(monkeypatch, claims)
    assert "lb1 no longer claims the VIP" in vip.stand_down(lab, "lb1", timeout_s=10)
    assert seen == []


def test_a_frozen_keepalived_still_claiming_the_vip_is_fenced(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = stand_down_world(monkeypatch, [True])
    said = vip.stand_down(lab, "lb1", timeout_s=0.5)
    assert "killed (SIGKILL: no advert)" in said
    assert seen[-1] == (
        "systemctl kill --signal=SIGKILL keepalived.service; ip addr del 10.77.0.10/24 dev host0"
    )


def test_a_failed_fence_is_an_error(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_down_world(monkeypatch, [True], fence_rc=1)
    with pytest.raises(errors.WebTierError, match="lb1: fencing its keepalived failed"):
        vip.stand_down(lab, "lb1", timeout_s=0.5)


# ----------------------------------------------------------------- VRRP journal
def test_parse_vrrp_journal() -> None:
    got = vip.parse_vrrp_journal(JOURNAL, "lb1")
    assert [(t.state, t.instance, t.host) for t in got] == [
        ("BACKUP", "faultbook_vip", "lb1"),
        ("MASTER", "faultbook_vip", "lb1"),
        ("FAULT", "faultbook_vip", "lb1"),
    ]
    assert got[1].at == datetime(2026, 11, 27, 18, 6, 6, 664115, tzinfo=UTC)


def probe_output(haproxy: str, keepalived: str, addrs: str, journal: str) -> str:
    m = vip._MARK
    return f"{haproxy}\n{m}\n{keepalived}\n{m}\n{addrs}{m}\n{journal}"


def test_parse_lb_probe() -> None:
    last = JOURNAL.splitlines()[3] + "\n"
    got = vip.parse_lb_probe(
        probe_output("active", "active", IP_ADDR_MASTER, last), "lb1", "10.77.0.10"
    )
    assert got == {
        "haproxy": "active",
        "keepalived": "active",
        "holds_vip": True,
        "vrrp_state": "MASTER",
    }
    got = vip.parse_lb_probe(
        probe_output("failed", "inactive", IP_ADDR_BACKUP, last), "lb2", "10.77.0.10"
    )
    assert got == {
        "haproxy": "failed",
        "keepalived": "inactive",
        "holds_vip": False,
        "vrrp_state": "stopped",
    }
    got = vip.parse_lb_probe(
        probe_output("active", "active", IP_ADDR_BACKUP, ""), "lb2", "10.77.0.10"
    )
    assert got["vrrp_state"] == "unknown"
    with pytest.raises(ValueError, match="lb1: unexpected probe output"):
        vip.parse_lb_probe("active\n", "lb1", "10.77.0.10")


def test_lb_status_keeps_an_unreachable_lb(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = JOURNAL.splitlines()[3] + "\n"
    fake_ssh(
        monkeypatch,
        {
            "lb1": cmd("lb1", probe_output("active", "active", IP_ADDR_MASTER, last)),
            "lb2": SSHError("lb2", "no answer on 10.77.0.12:22 within 5s"),
        },
    )
    monkeypatch.setattr(vip, "_healthz", lambda inv, lb, timeout: lb == "lb1")
    df = vip.lb_status(lab).set_index("lb")
    assert list(df.reset_index().columns) == list(vip.LB_COLUMNS)
    assert df.loc["lb1"].to_dict() == {
        "reachable": True,
        "holds_vip": True,
        "haproxy": "active",
        "keepalived": "active",
        "vrrp_state": "MASTER",
        "healthz": True,
        "error": "",
    }
    assert not df.loc["lb2", "reachable"] and not df.loc["lb2", "healthz"]
    assert df.loc["lb2", "error"] == "lb2: no answer on 10.77.0.12:22 within 5s"


def test_vrrp_transitions_asks_journalctl_since_and_filters(
    lab: inv_mod.Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    since = datetime(2026, 11, 27, 18, 6, 6, tzinfo=UTC)
    seen: list[str] = []

    def run(inv: Any, host: str, command: str, **kw: Any) -> ssh.CommandResult:
        seen.append(command)
        return cmd(host, JOURNAL)

    monkeypatch.setattr(ssh, "run", run)
    got = vip.vrrp_transitions(lab, "lb1", since)
    assert [t.state for t in got] == ["MASTER", "FAULT"]
    assert f"--since @{since.timestamp():.6f}" in seen[0]


def test_vrrp_transitions_refuses_naive_times_and_non_lb_hosts(lab: inv_mod.Inventory) -> None:
    with pytest.raises(ParameterError, match="naive"):
        vip.vrrp_transitions(lab, "lb1", datetime(2026, 1, 1))
    with pytest.raises(InventoryError, match="db1 is not in group lb"):
        vip.vrrp_transitions(lab, "db1", datetime.now(UTC) - timedelta(minutes=1))


# ------------------------------------------- the role's runtime-API reader script
SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight \
srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl \
srv_check_port srv_check_addr srv_agent_addr srv_agent_port
4 web 1 web1 10.77.0.21 2 0 1 1 245 15 3 3 6 0 0 0 - 8000 - 0 0 - - 0
4 web 3 web3 10.77.0.23 2 8 1 1 5 15 3 3 6 0 0 0 - 8000 - 0 0 - - 0
5 web_alive 3 web3 10.77.0.23 0 1 1 1 5 15 3 3 6 0 0 0 - 8000 - 0 0 - - 0

"""


@pytest.fixture
def fake_admin_socket(tmp_path: Path) -> Iterator[Path]:
    """A Unix socket that answers HAProxy's "show servers state" and "show stat" once each."""
    path = tmp_path / "admin.sock"
    answers = {"show servers state": SERVERS_STATE, "show stat": STATS_CSV}
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)

    def serve() -> None:
        for _ in range(2):
            conn, _ = srv.accept()
            with conn:
                asked = conn.recv(1024).decode().strip()
                conn.sendall(answers.get(asked, "Unknown command.\n").encode())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield path
    srv.close()


def test_the_role_script_reports_admin_state_per_backend(fake_admin_socket: Path) -> None:
    script = PLAYBOOKS_DIR / "roles" / "haproxy" / "files" / "haproxy-server-state"
    out = subprocess.run(
        [sys.executable, str(script), str(fake_admin_socket), "web3"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    got = json.loads(out.stdout)
    assert got == {
        "web": {"op_state": 2, "admin_state": 8, "maint": False, "drain": True, "up": False,
                "weight": 1, "status": "DRAIN", "scur": 0},
        "web_alive": {"op_state": 0, "admin_state": 1, "maint": True, "drain": False,
                      "up": False, "weight": 1, "status": "MAINT", "scur": 0},
    }  # fmt: skip


def test_the_role_script_fails_clearly_without_a_socket(tmp_path: Path) -> None:
    script = PLAYBOOKS_DIR / "roles" / "haproxy" / "files" / "haproxy-server-state"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "missing.sock"), "web3"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 1 and "missing.sock" in out.stderr and out.stdout == ""


def test_incident_leaves_a_target_that_is_up_again_alone() -> None:
    """An alert that cleared before its run started must not drain a healthy node."""
    from faultbook import inventory
    from faultbook.stack.haproxy import BackendHealth, pick_targets

    inv = inventory.load("lab")
    healthy = BackendHealth("web", ())
    assert pick_targets(healthy, "web2", "incident", inv) == []
    assert pick_targets(BackendHealth("web", ("web2",)), "web2", "incident", inv) == ["web2"]
    assert pick_targets(healthy, "web2", "drill", inv) == ["web2"]
