"""History: the score (recent 100, stale 75, failed 50, never 0; mean per tier, mean of
tiers), the site from the archive, JSON and JUnit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from defusedxml import ElementTree as SafeET
from fakeruns import fake_result

from faultbook import decisions
from faultbook.archive import present, store
from faultbook.cli import main
from faultbook.suites import history, score

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.setenv("FAULTBOOK_TRIGGER", "schedule:nightly")
    return h


def _doc(runbook: str, fault: str | None, verdict: str = "pass", **params: Any) -> dict[str, Any]:
    p = {"mode": "drill", **({"fault": fault} if fault else {}), **params}
    return {
        "runbook": runbook,
        "mode": "drill" if p.get("mode") != "incident" else "incident",
        "parameters": p,
        "fault": {"kind": fault} if fault else None,
        "verdict": verdict,
    }


def test_drill_keys() -> None:
    assert score.drill_key(_doc("db-failover", "host-crash")) == "db-failover/host-crash"
    assert score.drill_key(_doc("db-failover", None, mode="switchover")) == "db-failover/switchover"
    assert score.drill_key(_doc("backup-restore", None, mode="pitr", drill=True)) == (
        "backup-restore/pitr"
    )
    assert score.drill_key(_doc("backup-restore", None, mode="pitr", drill=False)) is None
    assert score.drill_key(_doc("health-check", None)) is None
    assert score.drill_key({**_doc("db-failover", None), "mode": "incident"}) is None
    keys = [d.key for d in score.catalogue()]
    assert len(keys) == len(set(keys))
    assert {
        "web-node-failure/process-freeze",
        "db-failover/switchover",
        "backup-restore/verify",
    } <= set(keys)


def test_the_score_per_drill_tier_and_overall() -> None:
    old = NOW - timedelta(days=30)
    runs = [
        (NOW - timedelta(days=1), _doc("db-failover", "host-crash")),  # recent 100
        (old, _doc("db-failover", "partition")),  # stale 75
        (old, _doc("lb-failover", "host-crash")),
        (NOW - timedelta(hours=1), _doc("lb-failover", "host-crash", "fail")),  # failed 50
        (NOW, _doc("health-check", None)),  # not a drill
    ]
    card = score.score(runs, NOW)
    by = {s.drill.key: s for s in card.drills}
    assert by["db-failover/host-crash"].score == 100 and by["db-failover/partition"].score == 75
    assert by["db-failover/switchover"].score == 0 and by["lb-failover/host-crash"].score == 50
    assert by["lb-failover/host-crash"].runs == 2
    per_tier = {t: sum(s.drill.tier == t for s in card.drills) for t in card.tiers}
    assert card.tiers["database"] == pytest.approx((100 + 75) / per_tier["database"])
    assert card.tiers["load balancer"] == pytest.approx(50 / per_tier["load balancer"])
    assert card.tiers["web"] == 0 and card.tiers["backup"] == 0
    assert card.overall == pytest.approx(sum(card.tiers.values()) / 4)
    # the window is a parameter: 40 days makes the old pass recent
    assert {s.drill.key: s.score for s in score.score(runs, NOW, 40).drills}[
        "db-failover/partition"
    ] == 100


def _archive(tmp_path: Path, n: int = 3) -> list[Path]:
    out = []
    for i in range(n):
        src = tmp_path / f"src{i}"
        fake_result(
            src,
            "db-failover",
            started=f"2026-11-{25 + i:02d}T10:00:00.000Z",
            verdict="fail" if i == 1 else "pass",
            metrics={
                "rto_s": 3.0 + i,
                "lost_writes": 0,
                "acked_writes": 10,
                "failed_requests": 2 * i,
                "total_requests": 1200,
                "p50_ms": 9.0,
                "p99_ms": 10004.248880,
            },
        )
        out.append(store.archive(src, "db-failover", params={"mode": "drill"}))
    hc = tmp_path / "hc"
    fake_result(hc, "health-check", started="2026-11-30T09:00:00.000Z", fault=None, mode="incident")
    store.archive(hc, "health-check", params={}, trigger="user:alice")
    return out


def test_the_site_has_runs_trends_latest_and_score(home: Path, tmp_path: Path) -> None:
    folders = _archive(tmp_path)
    decisions.record("decision", decision="ran", reason="route db-failover", alertname="NoPrimary")
    decisions.record("run-skipped", suite="smoke", reason="inventory 'lab' is busy")
    out = tmp_path / "site"
    data = history.build(out, now=NOW)
    page = (out / "index.html").read_text()
    assert len(data["runs"]) == 4
    drill = next(d for d in data["drills"] if d["drill"] == "db-failover/host-crash")
    assert drill["runs"] == 3 and drill["verdict"] == "pass" and drill["rto_max"] == 5.0
    assert drill["rto_p50"] == 4.0 and drill["rto_p95"] == pytest.approx(4.9)
    assert drill["status"] == "passed recently" and drill["score"] == 100
    assert (out / "trends" / "db-failover_host-crash.png").stat().st_size > 5000
    # rows link to the executed notebook in the archive
    link = Path(out, data["runs"][0]["started_href"]).resolve()
    assert link == (folders[0] / "db-failover.html").resolve()
    assert f'href="{data["runs"][0]["started_href"]}"' in page
    # styled: units, rounding, verdict colours, filters; no raw floats
    assert "10,004 ms" in page and "10004.24888" not in page and ">0.0<" not in page
    assert "5.0 s" in page and "verdict verdict-fail" in page and 'data-filter="source"' in page
    assert 'data-source="user"' in page and 'data-source="schedule"' in page
    assert "route db-failover" in page and "inventory &#x27;lab&#x27; is busy" in page
    doc = json.loads((out / "history.json").read_text())
    assert doc["score"]["overall"] == pytest.approx(data["score"]["overall"])


def test_an_empty_archive_still_makes_a_site(home: Path, tmp_path: Path) -> None:
    data = history.build(tmp_path / "site", now=NOW)
    assert data["runs"] == [] and data["score"]["overall"] == 0
    assert "no drill has run yet" in (tmp_path / "site" / "index.html").read_text()


def test_cli_history_json_and_junit(home: Path, tmp_path: Path) -> None:
    _archive(tmp_path)
    r = CliRunner().invoke(
        main,
        ["history", "--out", str(tmp_path / "h"), "--json", "--junit", str(tmp_path / "h.xml")],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {"score", "drills", "runs", "decisions"} <= set(doc)
    root = SafeET.parse(tmp_path / "h.xml").getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(score.catalogue())
    crash = next(c for c in cases if c.get("name") == "db-failover/host-crash")
    assert crash.find("failure") is None
    never = next(c for c in cases if c.get("name") == "db-failover/partition")
    skipped = never.find("skipped")
    assert skipped is not None and skipped.get("message") == "never run"
    bad = CliRunner().invoke(main, ["history", "--recent-days", "nan"])
    assert bad.exit_code == 2 and "--recent-days must be a number of days > 0" in bad.output


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.0, "", "0"),
        (7.0, "", "7"),
        (12000.0, "", "12,000"),
        (10004.248880, "ms", "10,004 ms"),
        (4.256, "s", "4.3 s"),
        (None, "s", "–"),
        (float("nan"), "ms", "–"),
        (True, "", "yes"),
    ],
)
def test_numbers_read_with_units_and_rounding(value: Any, unit: str, text: str) -> None:
    assert present.number(value, unit) == text
