"""The routing files: validated on load, alerts resolved to a runbook and its parameters,
and every alert rule routed or explicitly unrouted with a reason."""

from __future__ import annotations

import glob
import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from faultbook import inventory
from faultbook.alerts import routes
from faultbook.alerts.payload import Alert
from faultbook.errors import RoutesError
from faultbook.paths import INVENTORIES_DIR, PLAYBOOKS_DIR, REPO_ROOT
from faultbook.report import runner

RULES = sorted(glob.glob(str(PLAYBOOKS_DIR / "roles/monitoring/files/rules/*.yml")))


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.fixture(scope="module")
def lab() -> inventory.Inventory:
    return inventory.load("lab")


@pytest.fixture(scope="module")
def table(lab: inventory.Inventory) -> routes.Routes:
    return routes.load(lab)


def _alert(name: str, **labels: str) -> Alert:
    starts = datetime(2026, 12, 1, 10, 0, 0, 500000, tzinfo=UTC)
    return Alert("firing", {"alertname": name, **labels}, {"summary": "s"}, starts, None, "fp01")


def rules() -> list[dict]:
    out = []
    for f in RULES:
        for g in yaml.safe_load(Path(f).read_text())["groups"]:
            out += [dict(r, file=Path(f).name) for r in g["rules"] if "alert" in r]
    return out


# ------------------------------------------------------------------ the shipped files
def test_the_lab_allow_lists_a_lost_primary_a_web_node_and_an_lb(table: routes.Routes) -> None:
    assert set(table.autopilot_allow) == {"lost-primary", "web-node-down", "lb-down"}
    for name in table.autopilot_allow:
        r = table.route(name)
        assert (r.policy, r.effective, r.fallback) == ("autopilot", "autopilot", "")
    assert table.route("lost-primary").fencing


def test_a_real_inventory_allow_lists_none_and_says_why() -> None:
    t = routes.load(inventory.load("example"))
    assert t.autopilot_allow == ()
    auto = [r for r in t.routes if r.policy == "autopilot"]
    assert auto and all(r.effective == "prepare" for r in auto)
    assert all("not in autopilot_allow" in r.fallback for r in auto)


def test_a_lost_primary_runs_db_failover_on_autopilot(table: routes.Routes, lab) -> None:  # type: ignore[no-untyped-def]
    res = table.resolve(_alert("NoWritablePrimary", job="postgres"))
    assert res.route is not None and res.route.name == "lost-primary" and not res.refused
    assert res.parameters == {"inventory": str(lab.path), "mode": "incident", "confirm": True}


@pytest.mark.parametrize(
    ("name", "labels", "route", "target"),
    [
        (
            "HAProxyServerDown",
            {"instance": "lb1", "server": "web2", "proxy": "web"},
            "web-node-down",
            "web2",
        ),
        ("HostDown", {"instance": "web3"}, "web-node-down", "web3"),
        ("HostDown", {"instance": "web3:9100"}, "web-node-down", "web3"),
        ("HostDown", {"instance": "10.77.0.21:9100"}, "web-node-down", "web1"),
        ("HostDown", {"instance": "lb2"}, "lb-down", "lb2"),
        ("HostDown", {"instance": "db2"}, "db-host-down", "db2"),
        ("PostgresDown", {"instance": "db1"}, "db-host-down", "db1"),
    ],
)
def test_the_target_host_comes_from_a_label_mapped_to_the_inventory(
    table: routes.Routes, name: str, labels: dict, route: str, target: str
) -> None:
    res = table.resolve(_alert(name, **labels))
    assert res.route is not None and res.route.name == route, res
    assert res.parameters["target"] == target and res.host is not None
    assert res.parameters["mode"] == "incident"
    assert res.parameters["confirm"] is (res.route.effective == "autopilot")


def test_other_hosts_and_the_vip_go_to_diagnose_or_prepare(table: routes.Routes) -> None:
    res = table.resolve(_alert("HostDown", instance="backup1"))
    assert res.route is not None and res.route.name == "host-down"
    assert res.route.effective == "diagnose" and "confirm" not in res.parameters  # health-check
    res = table.resolve(_alert("WALArchivingFailing", instance="db1"))
    assert res.route is not None and res.parameters["mode"] == "verify"


@pytest.mark.parametrize(
    ("name", "labels", "route", "symptom"),
    [
        ("VIPProbeFailing", {"instance": "vip"}, "vip-probe-failing", "vip-probe"),
        ("HAProxyBackendDown", {"instance": "lb1", "proxy": "web"}, "web-backend-down", "5xx"),
    ],
)
@pytest.mark.parametrize("inv_name", ["lab", "example"])
def test_symptoms_go_to_triage_read_only(
    name: str, labels: dict, route: str, symptom: str, inv_name: str
) -> None:
    """A symptom names no link: triage walks the chain in diagnose mode (no confirm: it
    only reads) and the receiver hands over from its result (test_alerts_handover.py)."""
    inv = inventory.load(inv_name)
    res = routes.load(inv).resolve(_alert(name, **labels))
    assert res.route is not None and res.route.name == route and not res.refused
    assert (res.route.runbook, res.route.effective) == ("triage", "diagnose")
    assert res.parameters == {"symptom": symptom, "inventory": str(inv.path), "mode": "incident"}


def test_a_host_outside_the_inventory_is_refused_with_the_reason(table: routes.Routes) -> None:
    res = table.resolve(_alert("HAProxyServerDown", instance="lb1", server="web9"))
    assert res.route is not None and res.route.name == "web-node-down" and not res.parameters
    assert "'web9' (label server) is not a host of inventory lab" in res.refused
    # not passed on to the catch-all health-check route either
    res = table.resolve(_alert("HostDown", instance="ghost"))
    assert res.route is not None and res.route.name == "web-node-down"
    assert "'ghost' (label instance) is not a host" in res.refused
    res = table.resolve(_alert("HostDown"))
    assert "has no label server or instance naming its host" in res.refused


def test_an_alert_no_route_matches_has_no_route(table: routes.Routes) -> None:
    res = table.resolve(_alert("SomethingElse", instance="web1"))
    assert res.route is None and res.refused == ""


# ------------------------------------------------------------------ validation
def _load(tmp: Path, text: str, inv: inventory.Inventory | None = None) -> routes.Routes:
    p = tmp / "alert-routes.yml"
    p.write_text(textwrap.dedent(text))
    return routes.load(inv or inventory.load("lab"), p)


def _error(tmp: Path, text: str) -> str:
    with pytest.raises(RoutesError) as err:
        _load(tmp, text)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


ONE = """
routes:
  - name: r1
    match: {alertname: HostDown}
    runbook: %s
    policy: %s
    parameters: %s
"""


@pytest.mark.parametrize(
    ("runbook", "policy", "params", "expected"),
    [
        ("db-fail", "prepare", "{}", "route r1: unknown runbook 'db-fail'"),
        (
            "db-failover",
            "prepare",
            "{colour: red}",
            "route r1: unknown parameter 'colour' for runbook db-failover",
        ),
        ("db-failover", "prepare", "{max_rto_s: fast}", "parameter 'max_rto_s' expects float"),
        (
            "db-failover",
            "prepare",
            '{max_rto_s: "{alertname}"}',
            "parameter 'max_rto_s' expects float, got 'HostDown'",
        ),
        ("db-failover", "prepare", "{force: maybe}", "parameter 'force' expects bool"),
        ("db-failover", "prepare", '{target: "{hostname}"}', "unknown placeholder {hostname}"),
        ("db-failover", "sometimes", "{}", "policy 'sometimes' is not one of"),
        ("db-failover", "diagnose", "{confirm: true}", "parameters.confirm is set by the policy"),
        ("db-failover", "prepare", "{mode: drill}", "an alert never starts a drill"),
        ("db-failover", "prepare", "{mode: panic}", "parameter 'mode' expects one of"),
        ("backup-restore", "prepare", "{}", "runbook backup-restore has no incident mode"),
        ("db-failover", "prepare", "{result_dir: /x}", "unknown parameter 'result_dir'"),
    ],
)
def test_a_bad_route_is_one_line_naming_it(
    home: Path, runbook: str, policy: str, params: str, expected: str
) -> None:
    msg = _error(home, ONE % (runbook, policy, params))
    assert "route r1" in msg and expected in msg, msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("autopilot_allow: [nope]\nroutes: []\n", "autopilot_allow names route 'nope'"),
        ("routes: []\nextra: 1\n", "unknown key 'extra'"),
        ("routes: {a: 1}\n", "routes is a dict, expected a list"),
        ("routes: [\n", "not valid YAML at line"),
        ("unrouted: [{alert: HostDown, reason: ''}]\n", "unrouted HostDown: give a reason"),
        ("unrouted: [{alert: HostDown}]\n", "unrouted[0] must be {alert: NAME, reason: WHY}"),
        (
            ONE % ("db-failover", "prepare", "{}") + "    window: soon\n",
            "route r1: window is 'soon'",
        ),
        (ONE % ("db-failover", "prepare", "{}") + "    max_runs: 0\n", "route r1: max_runs"),
        (ONE % ("db-failover", "prepare", "{}") + "    lock: maybe\n", "route r1: lock 'maybe'"),
        (
            ONE % ("db-failover", "prepare", "{}") + "    colour: red\n",
            "route r1: unknown key 'colour'",
        ),
        (
            (ONE % ("db-failover", "prepare", "{}")).replace("HostDown", "{regex: '('}"),
            "route r1: match.alertname: bad regex",
        ),
        (
            (ONE % ("db-failover", "prepare", "{}")).replace(
                "HostDown}", "HostDown, host_group: dbs}"
            ),
            "route r1: host_group 'dbs' is not a group",
        ),
        (
            ONE % ("db-failover", "prepare", "{}")
            + ONE.replace("routes:\n", "") % ("db-failover", "prepare", "{}"),
            "route r1: the name is used twice",
        ),
        (
            ONE % ("db-failover", "prepare", "{}") + "unrouted: [{alert: HostDown, reason: x}]\n",
            "route r1: HostDown is also listed under unrouted",
        ),
    ],
)
def test_a_bad_file_is_one_line_naming_what(home: Path, text: str, expected: str) -> None:
    assert expected in _error(home, text)


def test_a_missing_file_is_one_line(home: Path) -> None:
    with pytest.raises(RoutesError) as err:
        routes.load(inventory.load("lab"), home / "none.yml")
    assert "none.yml: cannot be read" in str(err.value)


def test_labels_match_exactly_or_by_regex_and_fill_placeholders(home: Path) -> None:
    t = _load(
        home,
        """
        defaults: {window: 90s, max_runs: 3}
        routes:
          - name: pitr
            match:
              alertname: {regex: "Bad.*"}
              labels: {severity: critical, instance: {regex: "db[0-9]+"}}
            runbook: backup-restore
            policy: prepare
            parameters:
              mode: pitr
              target: "{starts_at}"
              bad_change_table: "{labels.table}"
              restore_host: "{annotations.scratch}"
            window: 1h30m
        """,
    )
    r = t.route("pitr")
    assert (r.window_s, r.max_runs) == (5400.0, 3)
    a = Alert(
        "firing",
        {"alertname": "BadChange", "severity": "critical", "instance": "db2", "table": "orders"},
        {"scratch": "restore1"},
        datetime(2026, 12, 1, 10, 0, 0, 500000, tzinfo=UTC),
        None,
        "fp",
    )
    res = t.resolve(a)
    assert res.route is r and not res.refused
    assert res.parameters["target"] == "2026-12-01T10:00:00Z"
    assert res.parameters["bad_change_table"] == "orders"
    assert res.parameters["restore_host"] == "restore1"
    assert res.parameters["confirm"] is False
    assert (
        t.resolve(
            Alert("firing", {**a.labels, "instance": "web1"}, {}, a.starts_at, None, "fp")
        ).route
        is None
    )
    assert (
        t.resolve(
            Alert("firing", {**a.labels, "severity": "warning"}, {}, a.starts_at, None, "fp")
        ).route
        is None
    )
    missing = t.resolve(
        Alert(
            "firing",
            {k: v for k, v in a.labels.items() if k != "table"},
            {"scratch": "restore1"},
            a.starts_at,
            None,
            "fp",
        )
    )
    assert missing.route is r and "the alert has no label 'table'" in missing.refused


def _real_inventory(tmp: Path, fence: bool) -> inventory.Inventory:
    d = tmp / "prod"
    shutil.copytree(INVENTORIES_DIR / "example", d)
    if fence:
        text = (
            (d / "hosts.yml")
            .read_text()
            .replace("  vars:\n", "  vars:\n    db_fence_playbook: playbooks/db_fence.yml\n", 1)
        )
        (d / "hosts.yml").write_text(text)
    (d / "alert-routes.yml").write_text(
        (d / "alert-routes.yml")
        .read_text()
        .replace("autopilot_allow: []", "autopilot_allow: [lost-primary, lb-down]")
    )
    return inventory.load(d)


def test_autopilot_needing_fencing_falls_back_to_prepare_when_unconfirmed(home: Path) -> None:
    t = routes.load(_real_inventory(home, fence=False))
    r = t.route("lost-primary")
    assert r.effective == "prepare" and "fencing cannot be confirmed" in r.fallback
    assert "db_fence_playbook" in r.fallback
    assert t.route("lb-down").effective == "autopilot"  # allow-listed, needs no fencing
    assert t.route("web-node-down").effective == "prepare"  # not allow-listed
    res = t.resolve(_alert("NoWritablePrimary"))
    assert res.parameters["confirm"] is False


def test_autopilot_with_a_fence_playbook_runs_with_confirm(home: Path) -> None:
    t = routes.load(_real_inventory(home / "f", fence=True))
    assert t.route("lost-primary").effective == "autopilot"
    res = t.resolve(_alert("NoWritablePrimary"))
    assert res.parameters["confirm"] is True
    res = t.resolve(_alert("HostDown", instance="lb1.example.net"))
    assert res.route is not None and res.parameters["target"] == "lb1.example.net"


# ------------------------------------------------------------------ rules, annotations
def _uncovered(t: routes.Routes, names: set[str]) -> tuple[list[str], list[str]]:
    """Rules neither routed nor unrouted, and unrouted entries naming no rule."""
    neither = sorted(
        n for n in names if not any(r.alertname(n) for r in t.routes) and n not in t.unrouted
    )
    return neither, sorted(set(t.unrouted) - names)


@pytest.mark.parametrize("inv_name", ["lab", "example"])
def test_every_alert_rule_is_routed_or_unrouted_with_a_reason(inv_name: str) -> None:
    t = routes.load(inventory.load(inv_name))
    names = {r["alert"] for r in rules()}
    assert {"NoWritablePrimary", "HostDown", "HAProxyServerDown"} <= names  # the files were read
    neither, stale = _uncovered(t, names)
    assert not neither, f"{t.path}: alert rules neither routed nor unrouted: {neither}"
    assert not stale, f"{t.path}: unrouted entries naming no alert rule: {stale}"
    assert all(reason.strip() for reason in t.unrouted.values())


def test_the_rule_coverage_check_can_fail(table: routes.Routes) -> None:
    names = {r["alert"] for r in rules()}
    assert _uncovered(table, names | {"BrandNewRule"}) == (["BrandNewRule"], [])
    assert _uncovered(table, names - {"DiskFilling"}) == ([], ["DiskFilling"])


@pytest.mark.parametrize("rule", rules(), ids=lambda r: f"{r['file']}:{r['alert']}")
def test_every_rule_names_its_runbook_and_how_to_run_it(rule: dict, table: routes.Routes) -> None:
    notes = rule.get("annotations", {})
    for key in ("summary", "runbook", "runbook_url", "action"):
        assert str(notes.get(key, "")).strip(), f"{rule['alert']} has no {key} annotation"
    assert notes["runbook"] in runner.runbooks()
    assert notes["runbook_url"] == f"docs/runbooks/{notes['runbook']}.md"
    assert (REPO_ROOT / notes["runbook_url"]).is_file()
    routed = {r.runbook for r in table.routes if r.alertname(rule["alert"])}
    if routed:  # the runbook it names is one its routes start
        assert notes["runbook"] in routed, (rule["alert"], notes["runbook"], routed)


def test_alerts_from_the_logs_have_their_routes(table: routes.Routes) -> None:
    res = table.resolve(_alert("PostgresFatalBurst", host="db2"))
    assert res.route is not None and res.route.name == "postgres-fatal-burst"
    assert res.route.effective == "diagnose" and res.route.runbook == "health-check"
    res = table.resolve(_alert("SSHAuthFailures", host="web1"))
    assert res.route is not None and res.route.runbook == "security-audit"
    assert res.route.effective == "prepare"
    res = table.resolve(_alert("LedgerErrorRate", instance="web3"))
    assert res.route is not None and res.route.name == "web-node-errors"
    assert (res.route.runbook, res.route.effective) == ("triage", "diagnose")
    assert res.parameters["symptom"] == "5xx"
    res = table.resolve(_alert("HAProxyBackendErrors", instance="lb1", proxy="web"))
    assert res.route is not None and res.route.name == "web-backend-errors"
    assert (res.route.runbook, res.parameters["symptom"]) == ("triage", "5xx")
