"""On a provisioned lab: the stack works, refuses bad input, stays idempotent."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from faultbook import ansible, ssh
from faultbook.backup import repository
from faultbook.lab.lab import Lab
from faultbook.stack import detect, http, monitoring, psql

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stacked(lab: Lab) -> Lab:
    """A provisioned lab: `make integration` provisions it with `faultbook lab up`; when the
    app does not answer ready through the VIP, provision here."""
    provisioned = False
    deadline = time.monotonic() + 60
    while not provisioned and time.monotonic() < deadline:
        try:
            ready = http.session(lab.inv).get(http.vip_url(lab.inv, "/readyz"), timeout=5)
            provisioned = ready.status_code == 200
        except requests.RequestException:
            time.sleep(2)
    if not provisioned:
        ansible.run_playbook("site.yml", lab.inv)
    return lab


def post(
    lab: Lab, body: object, key: str | None = None, raw: bytes | None = None
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    data = raw if raw is not None else json.dumps(body).encode()
    return http.ledger_session(lab.inv, "tests").post(
        http.vip_url(lab.inv, "/orders"), data=data, headers=headers, timeout=20
    )


def count_orders(lab: Lab, key: str | None = None) -> int:
    """Orders on the primary (with idempotency key KEY, when given)."""
    return int(
        psql.psql(
            lab.inv,
            psql.primary(lab.inv),
            "SELECT count(*) FROM orders WHERE :'key' = '' OR idempotency_key = :'key'",
            db="ledger",
            params={"key": key or ""},
        )
    )


# ------------------------------------------------------------------ it works
def test_post_then_get_through_the_vip_over_https(stacked: Lab) -> None:
    key = f"t-{uuid.uuid4()}"
    r = post(stacked, {"customer": "ada", "amount_cents": 1234}, key)
    assert r.status_code == 201, r.text
    order = r.json()
    g = http.ledger_session(stacked.inv, "tests").get(
        http.vip_url(stacked.inv, f"/orders/{order['id']}"), timeout=10
    )
    assert g.status_code == 200
    assert g.json()["customer"] == "ada" and g.json()["amount_cents"] == 1234


def test_http_redirects_to_https(stacked: Lab) -> None:
    r = http.session(stacked.inv).get(
        f"http://{stacked.inv.vars['vip']}/orders/1", allow_redirects=False, timeout=5
    )
    assert r.status_code in (301, 302, 308)
    assert r.headers["Location"].startswith("https://")


def test_the_same_idempotency_key_twice_gives_one_row(stacked: Lab) -> None:
    key = f"t-{uuid.uuid4()}"
    first = post(stacked, {"customer": "bob", "amount_cents": 5}, key)
    second = post(stacked, {"customer": "bob", "amount_cents": 5}, key)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert count_orders(stacked, key) == 1


def test_primary_and_quorum_synchronous_standbys(stacked: Lab) -> None:
    inv = stacked.inv
    prim = psql.primary(inv)
    rows = psql.psql(
        inv, prim, "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1"
    ).splitlines()
    standbys = {r.split("|")[0]: r.split("|")[1:] for r in rows}
    others = {h.name for h in inv.group("db")} - {prim}
    assert set(standbys) == others
    assert all(state == "streaming" and sync == "quorum" for state, sync in standbys.values())
    setting = psql.psql(inv, prim, "SHOW synchronous_standby_names")
    assert setting.startswith("ANY 1")


def test_an_acknowledged_write_is_visible_on_a_standby(stacked: Lab) -> None:
    key = f"t-{uuid.uuid4()}"
    assert post(stacked, {"customer": "eve", "amount_cents": 7}, key).status_code == 201
    prim = psql.primary(stacked.inv)
    deadline = time.monotonic() + 10
    for h in stacked.inv.group("db"):
        if h.name == prim:
            continue
        while True:
            n = psql.psql(
                stacked.inv,
                h.name,
                "SELECT count(*) FROM orders WHERE idempotency_key = :'key'",
                db="ledger",
                params={"key": key},
            )
            if n == "1" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert n == "1", f"{h.name} does not have the acknowledged row"


def test_pgbackrest_has_a_full_backup_and_check_passes(stacked: Lab) -> None:
    info = repository.info(stacked.inv)
    assert info and info[0]["status"]["code"] == 0
    assert any(b["type"] == "full" for b in info[0]["backup"])
    prim = psql.primary(stacked.inv)
    r = ssh.run(
        stacked.inv, prim, "cd /tmp && sudo -u postgres pgbackrest --stanza=main check", timeout=60
    )
    assert r.ok, r.stderr


def test_every_prometheus_target_is_up(stacked: Lab) -> None:
    deadline = time.monotonic() + 30
    while True:
        down = [
            (t["labels"].get("job"), t["labels"].get("instance"))
            for t in monitoring.raw_query(stacked.inv, "up == 0")
            for _ in [0]
        ]
        total = monitoring.raw_query(stacked.inv, "count(up)")
        n = int(float(total[0]["value"][1])) if total else 0
        # Wait for what is asserted: nothing down AND every host's targets discovered.
        if (not down and n >= len(stacked.inv.hosts)) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not down, f"targets down: {down}"
    assert n >= len(stacked.inv.hosts), f"only {n} targets for {len(stacked.inv.hosts)} hosts"


def test_no_alert_fires_on_a_healthy_stack(stacked: Lab) -> None:
    deadline = time.monotonic() + 60
    while True:
        firing = [
            a["labels"]["alertname"] + "/" + a["labels"].get("instance", "")
            for a in monitoring.firing_alerts(stacked.inv)
        ]
        if not firing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert firing == []


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "raw, key, status",
    [
        (b'{"customer": "x", "amount_cents": ', "bad-json", 400),
        (b'{"customer": "x"}', "missing-field", 422),
        (b'{"customer": "x", "amount_cents": -1}', "negative", 422),
        (b'{"customer": "x", "amount_cents": "10"}', "wrong-type", 422),
        (b'{"customer": "' + b"a" * 40000 + b'", "amount_cents": 1}', "huge", 413),
        (b'{"customer": "x", "amount_cents": 1}', None, 400),
    ],
)
def test_bad_requests_get_a_4xx_and_write_nothing(
    stacked: Lab, raw: bytes, key: str | None, status: int
) -> None:
    before = count_orders(stacked)
    k = f"{key}-{uuid.uuid4()}" if key else None
    r = post(stacked, None, k, raw=raw)
    assert r.status_code == status, r.text
    assert count_orders(stacked) == before


def test_sql_metacharacters_are_data(stacked: Lab) -> None:
    evil = "x'); DROP TABLE orders; --"
    key = f"t-{uuid.uuid4()}"
    r = post(stacked, {"customer": evil, "amount_cents": 1}, key)
    assert r.status_code == 201
    got = (
        http.ledger_session(stacked.inv, "tests")
        .get(http.vip_url(stacked.inv, f"/orders/{r.json()['id']}"), timeout=10)
        .json()
    )
    assert got["customer"] == evil
    assert count_orders(stacked) > 0  # the table is still there


# ------------------------------------------------------------ firewall
def _connect(host: str, port: int, timeout: float = 3) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "timeout"


@pytest.mark.parametrize(
    "dest, port", [("web1", 8000), ("db1", 9187), ("backup1", 8432), ("mon1", 9100)]
)
def test_controller_flows_outside_the_table_are_refused(stacked: Lab, dest: str, port: int) -> None:
    assert _connect(stacked.inv.host(dest).address, port) != "open"


def test_controller_flows_in_the_table_are_open(stacked: Lab) -> None:
    inv = stacked.inv
    assert _connect(inv.vars["vip"], 443) == "open"
    assert _connect(inv.host("lb1").address, 8404) == "open"
    assert _connect(inv.host("mon1").address, 9090) == "open"
    # The failover's probe: the postmaster answers an SSLRequest, and no further
    # (pg_hba.conf has no rule for the controller).
    assert _connect(inv.host("db1").address, 5432) == "open"
    assert detect.pg_answers(inv.host("db1").address, 5432, timeout=2.0)


@pytest.mark.parametrize(
    "src, dest, port",
    [("web1", "backup1", 22), ("web1", "db1", 22), ("lb1", "db1", 5432), ("web2", "mon1", 9090)],
)
def test_host_to_host_flows_outside_the_table_are_refused(
    stacked: Lab, src: str, dest: str, port: int
) -> None:
    addr = stacked.inv.host(dest).address
    r = ssh.run(
        stacked.inv,
        src,
        f"timeout 3 bash -c '</dev/tcp/{addr}/{port}' 2>/dev/null && echo open || echo no",
    )
    assert r.stdout.strip() == "no"


def test_allowed_host_flow_is_open(stacked: Lab) -> None:
    addr = stacked.inv.host("db1").address
    r = ssh.run(
        stacked.inv,
        "web1",
        f"timeout 3 bash -c '</dev/tcp/{addr}/5432' 2>/dev/null && echo open || echo no",
    )
    assert r.stdout.strip() == "open"


# ------------------------------------------------------ idempotence, check
@pytest.mark.extended  # a whole provision: ~6 min
def test_a_second_provision_changes_nothing(stacked: Lab) -> None:
    res = ansible.run_playbook("site.yml", stacked.inv)
    changed = {h: s.changed for h, s in res.stats.items() if s.changed}
    assert changed == {}


@pytest.mark.extended  # a whole provision in check mode: ~7 min
def test_check_mode_through_the_cli_reports_no_change(stacked: Lab) -> None:
    # `faultbook provision --check` runs site.yml in check mode on every host
    # (ansible.run_playbook(check=True)): exit 0 and no host with a change.
    r = subprocess.run(
        [".venv/bin/faultbook", "provision", "--check"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "changed=0" in r.stdout
    assert not re.search(r"changed=[1-9]", r.stdout), r.stdout[-2000:]


# --------------------------------------------------------------- secrets
def test_no_secret_appears_in_the_repo_logs_or_reports(stacked: Lab, tmp_path: Path) -> None:
    from faultbook import secrets
    from faultbook.paths import REPO_ROOT, faultbook_home

    # Never let an assertion print a secret: compare counts and report paths only.
    values = [v for v in secrets.read_vault(stacked.inv).values() if len(v) >= 8]
    n_values = len(values)
    assert n_values == len(secrets.VAULT_VARS)
    r = subprocess.run(
        [".venv/bin/faultbook", "run", "health-check", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    scanned = [tmp_path / "health-check.ipynb", tmp_path / "result.json"]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.split()
    scanned += [REPO_ROOT / f for f in tracked]
    artifacts = faultbook_home() / "lab" / "runner" / "artifacts"
    scanned += [p for p in artifacts.rglob("*") if p.is_file()]
    leaks = []
    for path in scanned:
        text = path.read_text(errors="replace") if path.exists() else ""
        leaks += [f"{path}" for v in values if v in text]
    assert r.stdout + r.stderr and leaks == []
