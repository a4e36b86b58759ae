from __future__ import annotations

import pandas as pd

from faultbook.results import Run
from faultbook.stack import health

PROBE_OUT = """hostname=db1
state=degraded
failed=postgresql@15-main.service,foo.service
uptime_s=123.45
load1=0.50
mem_total_kb=1000
mem_avail_kb=250
disk=2000,500
"""


def test_parse_probe() -> None:
    r = health.parse_probe(PROBE_OUT)
    assert r["hostname"] == "db1"
    assert r["state"] == "degraded"
    assert r["failed_units"] == ["postgresql@15-main.service", "foo.service"]
    assert r["uptime_s"] == 123.45
    assert r["mem_used_pct"] == 75.0
    assert r["disk_used_pct"] == 25.0


def row(host: str, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "host": host,
        "reachable": True,
        "hostname": host,
        "state": "running",
        "failed_units": [],
        "error": "",
    }
    base.update(kw)
    return base


def test_verdict_names_every_unhealthy_host() -> None:
    df = pd.DataFrame(
        [
            row("lb1"),
            row("db1", reachable=False, state="unreachable", error="no answer on 10.77.0.31:22"),
            row("db2", state="degraded", failed_units=["x.service"]),
            row("web1", hostname="web9"),
        ]
    )
    v = health.verdict(df)
    assert not v.ok
    text = str(v)
    assert "db1 unreachable (no answer on 10.77.0.31:22)" in text
    assert "db2 systemd degraded (failed units: x.service)" in text
    assert "web1 answers as 'web9'" in text
    assert "lb1" not in text


def test_record_sets_metrics_and_fails_the_run() -> None:
    df = pd.DataFrame([row("lb1"), row("db1", reachable=False, state="unreachable", error="x")])
    run = Run.start("health-check", "incident", {})
    v = health.record(run, df)
    assert not v.ok and run.verdict == "fail"
    assert run.metrics["hosts_reachable"] == 1
