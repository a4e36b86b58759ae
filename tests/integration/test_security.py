"""The security audit on the provisioned lab: it passes; a listener nobody declared makes
the exposure check fail naming the host and the port; closed again, it passes.

The runbook runs in drill mode exactly as `faultbook run` runs it: the whole
audit (nmap from the controller and from a namespace on the bridge, ssh-audit,
testssl.sh, PostgreSQL, hosts, secrets), then the exposed-listener fault and
two rescans of that host. A second test drives the library directly: a
listener on another host and port, the exposure check over every host, its
verdict, the revert."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from faultbook import ssh
from faultbook.drills import faults
from faultbook.inventory import Inventory
from faultbook.lab.lab import Lab
from faultbook.report import runner
from faultbook.security import audit as security

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inv(lab: Lab) -> Inventory:
    return lab.inv


def nothing_left(inv: Inventory, host: str, port: int) -> None:
    r = ssh.run(
        inv,
        host,
        f"ss -Htln 'sport = :{port}'; nft list chain inet faultbook input | "
        "grep -c faultbook-exposed-listener || true",
        sudo=True,
    )
    assert r.ok and f":{port}" not in r.stdout and r.stdout.strip().endswith("0"), r.stdout


@pytest.mark.extended  # nbval runs the audit; the listener test checks the rescan
def test_the_audit_passes_and_its_drill_names_the_listener(inv: Inventory, tmp_path: Path) -> None:
    t0 = time.monotonic()
    outcome = runner.run(
        "security-audit", {"mode": "drill", "drill_host": "restore1", "drill_port": 18123}, tmp_path
    )
    took = time.monotonic() - t0
    doc = json.loads((tmp_path / "result.json").read_text())
    steps = {s["name"]: s for s in doc["steps"]}
    failed = [f"{s['name']}: {s['detail']}" for s in doc["steps"] if s["status"] == "failed"]
    assert outcome.exit_code == 0 and doc["verdict"] == "pass", failed
    m = doc["metrics"]
    assert m["findings_high"] == 0 and m["checks_passed"] > 50, m
    opened = steps["drill: open a listener"]["detail"]
    assert "named restore1 tcp/18123 from 2 vantage point(s)" in opened, opened
    assert "from controller (10.77.0.1): 10.77.0.42 tcp/18123 is open" in opened
    assert "from outside (10.77.0.250): 10.77.0.42 tcp/18123 is open" in opened
    assert "restore1 as declared again" in steps["drill: close the listener"]["detail"]
    assert doc["fault"]["kind"] == "exposed-listener" and doc["fault"]["reverted_at"]
    nothing_left(inv, "restore1", 18123)
    print(f"security-audit drill: {took:.0f} s; metrics {m}")


def test_an_undeclared_listener_fails_the_exposure_check(inv: Inventory) -> None:
    # Ports 1-1024 and 18000-18200 of every host: the full sweep is the runbook's (above).
    ports = "1-1024,18000-18200"
    a = security.begin("lab", "incident", "10.77.0.250", ports, 300.0, 14.0, "web2", 18124, "")
    fault = faults.make("exposed-listener", inv, "web2", port=18124, max_s=300)
    fault.inject()
    try:
        a.exposure()
    finally:
        fault.revert()
    high = [f for f in a.findings.high() if f.check == "exposure"]
    assert sorted(f.evidence for f in high) == [
        "from controller (10.77.0.1): 10.77.0.22 tcp/18124 is open; no flow admits it",
        "from outside (10.77.0.250): 10.77.0.22 tcp/18124 is open; no flow admits it",
    ]
    assert {f.host for f in high} == {"web2"}
    a.finish()
    assert a.verdict().startswith("FAIL: 2 high finding(s)") and "web2" in a.verdict()
    nothing_left(inv, "web2", 18124)
    b = security.begin("lab", "incident", "10.77.0.250", ports, 300.0, 14.0, "web2", 18124, "")
    b.exposure()
    assert b.findings.high() == [], [f.evidence for f in b.findings.high()]
    b.finish()
    assert b.verdict().startswith("PASS")
