"""Parsers and judges on real output captured from the lab (tests/unit/fixtures/security):
nmap's XML from the controller and the outside namespace (and with a test listener
open), ssh-audit's text, pg_hba_file_rules and the privilege queries, the hosts probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faultbook import inventory
from faultbook.inventory import Inventory
from faultbook.security import exposure, flows, hosts, postgres, sshd

FIX = Path(__file__).parent / "fixtures" / "security"


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return inventory.load("lab")


@pytest.fixture(scope="module")
def table(lab: Inventory) -> flows.FlowTable:
    return flows.load(lab)


def scan(name: str, label: str, address: str) -> exposure.Scan:
    ports, timeouts = exposure.parse_xml((FIX / name).read_text())
    return exposure.Scan(exposure.Vantage(label, address, "local"), ports, timeouts, 1.0, [])


# ------------------------------------------------------------------ nmap
def test_the_lab_as_provisioned_matches_the_flow_table(
    lab: Inventory, table: flows.FlowTable
) -> None:
    targets = flows.targets(lab, "lb1")
    udp = set(exposure.EXTRA_UDP) | {9094}
    for name, label, addr in (
        ("nmap-controller.xml", "controller", "10.77.0.1"),
        ("nmap-outside.xml", "outside", "10.77.0.250"),
    ):
        s = scan(name, label, addr)
        assert len({p.address for p in s.ports}) == 13 and not s.host_timeouts
        out = exposure.compare(s, table, targets, udp)
        assert [f.status for f in out] == ["pass"] * 13, [f.evidence for f in out]
    ctl = exposure.frame(scan("nmap-controller.xml", "controller", "10.77.0.1"), targets)
    assert ctl.set_index("target").loc["mon1", "open"] == "22/tcp, 9090/tcp, 9093/tcp"
    # silence on UDP (ICMP rate-limited) is not "open": nothing from outside
    out = exposure.frame(scan("nmap-outside.xml", "outside", "10.77.0.250"), targets)
    assert set(out["open"]) == {"-"}


def test_a_listener_nobody_declared_is_named_with_host_port_and_vantage(
    lab: Inventory, table: flows.FlowTable
) -> None:
    s = scan("nmap-controller-listener.xml", "controller", "10.77.0.1")
    targets = [t for t in flows.targets(lab) if t.name in ("restore1", "backup1")]
    out = exposure.compare(s, table, targets, [9094, 53])
    bad = [f for f in out if f.status == "fail"]
    assert [(f.host, f.severity) for f in bad] == [("restore1", "high")]
    assert bad[0].evidence == (
        "from controller (10.77.0.1): 10.77.0.42 tcp/18123 is open; no flow admits it"
    )
    # a second probe that no longer sees it (a lost packet, a closed listener): no finding
    quiet = exposure.compare(s, table, targets, [9094, 53], lambda t, ports: set())
    assert all(f.status == "pass" for f in quiet)


def test_a_declared_port_that_does_not_answer_is_medium(
    lab: Inventory, table: flows.FlowTable
) -> None:
    s = scan("nmap-controller.xml", "controller", "10.77.0.1")
    s = exposure.Scan(
        s.vantage,
        [p for p in s.ports if not (p.address == "10.77.0.51" and p.port == 9093)],
        [],
        1,
        [],
    )
    mon1 = [t for t in flows.targets(lab) if t.name == "mon1"]
    (f,) = exposure.compare(s, table, mon1, [])
    assert f.severity == "medium" and "10.77.0.51 tcp/9093 is admitted" in f.evidence
    timed = exposure.Scan(s.vantage, s.ports, ["10.77.0.51"], 1, [])
    (g,) = exposure.compare(timed, table, mon1, [])
    assert g.severity == "high" and "the scan is incomplete" in g.evidence


def test_nmap_command_lines() -> None:
    argv = exposure.nmap_argv(["10.77.0.11"], "1-65535", [9094, 53])
    assert argv[:5] == ["nmap", "-n", "-Pn", "-sS", "-sU"]
    assert "T:1-65535,U:53,9094" in argv and "--min-rate" not in argv
    assert "--min-rate" in exposure.nmap_argv(["x"], min_rate=2000)
    assert exposure.confirm_argv("10.77.0.11", [8404], [9094]) == [
        *["nmap", "-n", "-Pn", "-sT", "-sU", "-p", "T:8404,U:9094"],
        *["--max-retries", "3", "-oX", "-", "10.77.0.11"],
    ]
    with pytest.raises(ValueError, match="not XML"):
        exposure.parse_xml("nmap: command not found")


# ------------------------------------------------------------- ssh-audit
def test_ssh_audit_of_a_lab_host_has_no_failure() -> None:
    text = (FIX / "ssh-audit-web1.txt").read_text()
    rep = sshd.parse(text)
    assert rep.software == "OpenSSH 9.2p1"
    assert ("kex", "curve25519-sha256") in rep.algorithms and (
        "enc",
        "aes256-gcm@openssh.com",
    ) in rep.algorithms
    assert ("kex", "kex-strict-s-v00@openssh.com") not in rep.algorithms  # a pseudo-algorithm
    assert rep.failing() == []
    assert rep.warnings() == [
        "(kex) sntrup761x25519-sha512@openssh.com: using experimental algorithm"
    ]
    out = sshd.judge("web1", 2, text)
    assert [(f.severity, f.status) for f in out] == [("low", "fail")]


def test_ssh_audit_fails_weak_algorithms() -> None:
    text = (FIX / "ssh-audit-lookup-weak.txt").read_text()
    (f, w) = sshd.judge("old", 3, text)
    assert f.severity == "high" and "(kex) diffie-hellman-group1-sha1" in f.evidence
    assert "(enc) 3des-cbc" in f.evidence and "(key) ssh-dss" in f.evidence
    assert w.severity == "low"
    (e,) = sshd.judge("down", 1, "(gen) connection refused")
    assert e.severity == "high" and "could not audit" in e.evidence


def test_login_attempt_verdicts() -> None:
    ok = sshd.login_findings(sshd.LoginAttempt("h", "password", True, "x", ("publickey",)))
    assert ok.status == "pass"
    weak = sshd.login_findings(
        sshd.LoginAttempt("h", "password", True, "x", ("publickey", "password"))
    )
    assert weak.severity == "high" and "offers password" in weak.evidence
    inn = sshd.login_findings(sshd.LoginAttempt("h", "root", False, "root logged in"))
    assert inn.severity == "high" and "root login accepted" in inn.evidence


# ------------------------------------------------------------- PostgreSQL
def test_pg_hba_of_the_lab_matches_the_flow_table(table: flows.FlowTable) -> None:
    rules = postgres.parse_hba((FIX / "pg-hba-db1.json").read_text())
    assert any(r.type == "hostssl" and r.user == ["ledger"] for r in rules)
    out = postgres.judge_hba("db1", rules, table)
    assert [f.status for f in out] == ["pass"], [f.evidence for f in out]


def test_pg_hba_rules_outside_the_flows_or_without_tls_are_high(table: flows.FlowTable) -> None:
    rules = postgres.parse_hba((FIX / "pg-hba-db1.json").read_text())
    web1 = next(r for r in rules if r.address == "10.77.0.21")
    stranger = postgres.HbaRule(
        99, "hostssl", ["ledger"], ["ledger"], "10.77.0.250", None, "scram-sha-256", None
    )
    plain = postgres.HbaRule(
        98, "host", web1.database, web1.user, "10.77.0.21", None, "scram-sha-256", None
    )
    md5 = postgres.HbaRule(97, "hostssl", ["all"], ["all"], "10.77.0.21", None, "md5", None)
    out = postgres.judge_hba("db1", [*rules, stranger, plain, md5], table)
    ev = sorted(f.evidence for f in out)
    assert all(f.severity == "high" for f in out) and len(out) == 3
    assert any("line 99" in e and "not a source the flow table admits" in e for e in ev)
    assert any("line 98" in e and "without TLS" in e for e in ev)
    assert any("line 97" in e and "method md5" in e for e in ev)


def test_settings_and_privileges_from_the_lab() -> None:
    s = json.loads((FIX / "pg-settings-db1.json").read_text())
    assert [f.status for f in postgres.judge_settings("db1", s)] == ["pass"]
    weak = postgres.judge_settings(
        "db1", {**s, "ssl_min_protocol_version": "TLSv1", "weak_passwords": ["old"]}
    )
    assert {f.severity for f in weak} == {"high"} and len(weak) == 2
    ledger = json.loads((FIX / "pg-privileges-ledger.json").read_text())
    (ok,) = postgres.judge_privileges("db1", "ledger", ledger, ["public.orders"])
    assert ok.status == "pass" and "reads public.orders" in ok.evidence
    mon = json.loads((FIX / "pg-privileges-pgmonitor.json").read_text())
    (bad,) = postgres.judge_privileges("db1", "pgmonitor", mon, ["public.orders"])
    assert bad.severity == "high" and "member of pg_monitor" in bad.evidence
    owner = {**ledger, "owns": ["public.orders"], "write": ["public.orders:TRUNCATE"]}
    (o,) = postgres.judge_privileges("db1", "ledger", owner, ["public.orders"])
    assert "owns (may DROP/ALTER) public.orders" in o.evidence and "TRUNCATE" in o.evidence


# ------------------------------------------------------------------ hosts
@pytest.mark.parametrize("host", ["db1", "mon1", "lb1", "web1", "backup1", "restore1"])
def test_each_lab_hosts_probe_passes(host: str, lab: Inventory, table: flows.FlowTable) -> None:
    p = hosts.parse_probe((FIX / f"hosts-probe-{host}.txt").read_text())
    assert p.complete and p.sockets and p.secrets
    keys = {fp for ln in p.keys["deploy"] if (f := hosts.fingerprint(ln)) for fp in [f[0]]}
    out = [
        *hosts.judge_sudoers(host, p, "deploy"),
        *hosts.judge_keys(host, p, "deploy", keys),
        *hosts.judge_sockets(host, hosts.parse_ss(p.sockets), table),
        *hosts.judge_secret_files(host, p),
    ]
    assert [f.status for f in out] == ["pass"] * 4, [f.evidence for f in out]


def test_hosts_findings_from_the_probe(lab: Inventory, table: flows.FlowTable) -> None:
    p = hosts.parse_probe((FIX / "hosts-probe-mon1.txt").read_text())
    ls = hosts.parse_ss(p.sockets)
    assert any(x.proto == "udp" and x.port == 9094 for x in ls)
    assert [x.port for x in ls if x.loopback] == [9115]  # the blackbox exporter
    # the web node's gunicorn on mon1 would be a listener no flow opens there
    web = hosts.parse_ss(
        (FIX / "hosts-probe-web1.txt")
        .read_text()
        .split("### sockets\n")[1]
        .split("###")[0]
        .splitlines()
    )
    (f,) = hosts.judge_sockets("mon1", [*ls, *[x for x in web if x.port == 8000]], table)
    assert f.severity == "medium" and "gunicorn listens on tcp 0.0.0.0:8000" in f.evidence
    # an unknown key, a sudo rule, a world-readable secret
    p.keys["deploy"].append(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFakeFak intruder"
    )
    p.rules.append("ledger ALL=(ALL) NOPASSWD: ALL")
    p.secrets.append(("vault_pg_app_password", "644", "root", "root", "/etc/ledger/ledger.env"))
    p.secrets.append(("vault_pg_app_password", "600", "root", "root", "/var/log/ledger.log"))
    allowed = {hosts.fingerprint(p.keys["deploy"][0])[0]}  # type: ignore[index]
    (k,) = hosts.judge_keys("mon1", p, "deploy", allowed)
    assert k.severity == "high" and "intruder" in k.evidence
    (s,) = hosts.judge_sudoers("mon1", p, "deploy")
    assert s.severity == "high" and "ledger ALL=(ALL) NOPASSWD: ALL" in s.evidence
    sec = hosts.judge_secret_files("mon1", p)
    assert sorted(f.evidence.split(" ")[0] for f in sec) == [
        "/etc/ledger/ledger.env",
        "/var/log/ledger.log",
    ]
    assert {f.severity for f in sec} == {"high"}
    assert hosts.judge_updates("mon1", p, lab=True)[0].status == "skip"


def test_the_lab_deploy_key_is_the_expected_one(lab: Inventory) -> None:
    p = hosts.parse_probe((FIX / "hosts-probe-web1.txt").read_text())
    fp = hosts.fingerprint(p.keys["deploy"][0])
    assert fp is not None and fp[0].startswith("SHA256:") and fp[1] == "faultbook-lab-deploy"
