"""The history site and the demo report as a person sees them: built from fake runs (no
lab), opened in Debian's headless Chromium through Playwright (``executable_path``:
Playwright's own browser download is never used), screenshotted into
reports/test-artifacts/history/ (``FAULTBOOK_TEST_ARTIFACTS`` moves the root), and
checked on the rendered page: units and rounding, the verdict colours as computed
styles, the filters, the links to the executed notebooks, tables that fit the page.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fakeruns import fake_result

from faultbook.archive import store
from faultbook.report import demo as demo_report
from faultbook.suites import history

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = (
    Path(os.environ.get("FAULTBOOK_TEST_ARTIFACTS", ROOT / "reports" / "test-artifacts"))
    / "history"
)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PASS_BG, FAIL_BG = "rgb(220, 245, 227)", "rgb(253, 224, 224)"  # .verdict-pass, .verdict-fail

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"
)

# a cell of each unit as present.number writes it: no 0.0, no 10004.248880
COUNT = re.compile(r"^(–|\d{1,3}(,\d{3})*)$")
SECONDS = re.compile(r"^(–|\d{1,2}\.\d s|\d{1,3}(,\d{3})* s)$")
MILLIS = re.compile(r"^(–|\d{1,3}(,\d{3})* ms)$")
UNIT_OF = {
    "RTO": SECONDS,
    "lost writes": COUNT,
    "failed requests": COUNT,
    "requests": COUNT,
    "p99 latency": MILLIS,
}


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            yield context.new_page()
        finally:
            browser.close()


def _shoot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / f"{name}.png"
    png.unlink(missing_ok=True)  # a run's screenshot replaces the previous run's
    page.screenshot(path=str(png), full_page=True)
    assert png.stat().st_size > 20_000
    return png


def _table(page: Any, selector: str) -> list[dict[str, str]]:
    """The rendered rows of a table: header label → the cell's visible text."""
    heads = page.locator(f"{selector} thead th").all_inner_texts()
    rows = []
    for tr in page.locator(f"{selector} tbody tr").all():
        cells = tr.locator("td").all_inner_texts()
        rows.append({" ".join(h.split()): c.strip() for h, c in zip(heads, cells, strict=True)})
    return rows


def _check_units(rows: list[dict[str, str]]) -> None:
    for row in rows:
        for head, pattern in UNIT_OF.items():
            if head in row:
                assert pattern.match(row[head]), f"{head}: {row[head]!r} in {row}"
        assert "10004.24888" not in " ".join(row.values())


def _background(page: Any, selector: str) -> str:
    return str(page.locator(selector).first.evaluate("e => getComputedStyle(e).backgroundColor"))


def _links_exist(page: Any, selector: str, site: Path) -> list[Path]:
    hrefs = [a.get_attribute("href") for a in page.locator(selector).all()]
    targets = [(site / str(h)).resolve() for h in hrefs]
    missing = [str(t) for t in targets if not t.is_file()]
    assert hrefs and not missing, missing
    return targets


def _fits(page: Any) -> None:
    """No table is wider than the page at 1400 px (each sits in a scrolling box)."""
    wide = page.evaluate(
        "[...document.querySelectorAll('.scroll')]"
        ".filter(d => d.scrollWidth > d.clientWidth + 1).length"
    )
    assert wide == 0
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")


# ------------------------------------------------------------------- history
def _archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path / "home"))
    for i, (verdict, trigger) in enumerate(
        [("pass", "schedule:nightly"), ("fail", "alert:3fa2"), ("pass", "schedule:nightly")]
    ):
        src = tmp_path / f"src{i}"
        fake_result(
            src,
            "db-failover",
            started=f"2026-11-{25 + i:02d}T10:00:00.000Z",
            verdict=verdict,
            metrics={
                "rto_s": 3.04 + i * 0.5,
                "lost_writes": 0,
                "acked_writes": 4000,
                "failed_requests": 2 * i,
                "total_requests": 12000,
                "p50_ms": 9.0,
                "p99_ms": 10004.248880,
            },
        )
        store.archive(src, "db-failover", params={"mode": "drill"}, trigger=trigger)
    hc = tmp_path / "hc"
    fake_result(hc, "health-check", started="2026-11-30T09:00:00.000Z", fault=None, mode="incident")
    store.archive(hc, "health-check", params={}, trigger="user:alice")


def test_the_history_site_in_a_browser(
    page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _archive(tmp_path, monkeypatch)
    site = tmp_path / "site"
    history.build(site, now=NOW)
    page.goto((site / "index.html").as_uri())
    _shoot(page, "history")

    runs = _table(page, "#runs")
    assert len(runs) == 4
    _check_units(runs)
    assert {r["requests"] for r in runs if r["tier"] == "database"} == {"12,000"}
    assert {r["p99 latency"] for r in runs} == {"10,004 ms"}
    assert [r["RTO"] for r in runs if r["tier"] == "database"] == ["4.0 s", "3.5 s", "3.0 s"]
    assert {r["lost writes"] for r in runs} == {"0"}

    assert _background(page, "#runs .verdict-pass") == PASS_BG
    assert _background(page, "#runs .verdict-fail") == FAIL_BG

    visible = page.locator("#runs tbody tr:visible")
    page.select_option('select[data-filter="verdict"]', "fail")
    assert visible.count() == 1 and "alert" in visible.first.inner_text()
    page.select_option('select[data-filter="verdict"]', "")
    page.select_option('select[data-filter="source"]', "schedule")
    assert visible.count() == 2
    page.select_option('select[data-filter="runbook"]', "health-check")
    assert visible.count() == 0
    page.select_option('select[data-filter="source"]', "")
    assert visible.count() == 1
    page.select_option('select[data-filter="runbook"]', "")
    assert visible.count() == 4

    notebooks = _links_exist(page, "#runs tbody td a", site)
    assert len(notebooks) == 4
    archive = (tmp_path / "home" / "runs").resolve()
    assert all(n.suffix == ".html" and n.is_relative_to(archive) for n in notebooks)
    _links_exist(page, "table:not(#runs) tbody td a", site)  # the latest run per drill
    # a drill's name breaks after its slash, never at a hyphen
    drill = page.locator("table:not(#runs) tbody tr").first.locator("td").first
    assert drill.inner_text().replace("\n", "") == "db-failover/host-crash"
    _fits(page)


# ---------------------------------------------------------------------- demo
def _demo_runs(out: Path) -> list[demo_report.Done]:
    done = []
    entries = [
        ("health-check", "health-check", "pass"),
        ("web-node-kill", "web-node-failure", "pass"),
        ("db-primary-crash", "db-failover", "pass"),
        ("lb-master-crash", "lb-failover", "fail"),
        ("pitr", "backup-restore", "skipped"),
    ]
    for name, runbook, verdict in entries:
        d = out / name
        if verdict == "skipped":
            done.append(demo_report.Done(name, runbook, d, skipped="not in steady state"))
            continue
        drill = runbook != "health-check"
        fake_result(d, runbook, verdict=verdict, fault="host-crash" if drill else None)
        doc = json.loads((d / "result.json").read_text())
        if drill:  # detected and recovered within 0.1 s of the fault: close markers
            doc["fault"]["injected_at"] = "2026-11-27T10:00:01.000Z"
            doc["detected_at"] = "2026-11-27T10:00:01.050Z"
            doc["recovered_at"] = "2026-11-27T10:00:01.100Z"
            (d / "result.json").write_text(json.dumps(doc))
        else:  # the health check measures no client impact
            doc["metrics"] = {}
            (d / "result.json").write_text(json.dumps(doc))
            (d / "traffic.csv").unlink()
        done.append(demo_report.Done(name, runbook, d))
    return done


def test_the_demo_report_in_a_browser(page: Any, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    index = demo_report.write_report(out, _demo_runs(out))
    page.goto(index.as_uri())
    _shoot(page, "demo")

    rows = _table(page, "table")
    assert [r["drill"] for r in rows] == [
        "health-check",
        "web-node-kill",
        "db-primary-crash",
        "lb-master-crash",
        "pitr",
    ]
    _check_units(rows)
    assert rows[0]["RTO"] == "–" and rows[1]["RTO"] == "4.2 s" and rows[1]["requests"] == "900"
    assert rows[4]["verdict"] == "skipped" and rows[4]["proof / note"] == "not in steady state"
    assert _background(page, "table .verdict-pass") == PASS_BG
    assert _background(page, "table .verdict-fail") == FAIL_BG
    notebooks = _links_exist(page, "table tbody td a", out)
    assert [n.parent.name for n in notebooks] == [r["drill"] for r in rows[:4]]
    _fits(page)
