"""Fake runs for the archive, audit, history and suite tests: result.json documents that
conform to the schema, written as a runbook would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from faultbook.drills.traffic import save_records
from faultbook.results import Run, iso, validate


def records(n: int = 40, fail_from: int = 10, fail_to: int = 14) -> pd.DataFrame:
    """Client records as drills.traffic writes them: N requests, some failing."""
    t0 = pd.Timestamp("2026-11-27T10:00:00Z")
    rows = []
    for i in range(n):
        sent = t0 + pd.Timedelta(milliseconds=100 * i)
        ok = not fail_from <= i < fail_to
        rows.append(
            {
                "seq": i,
                "kind": "POST" if i % 2 == 0 else "GET",
                "sent_at": sent,
                "answered_at": sent + pd.Timedelta(milliseconds=10),
                "latency_ms": 10.0,
                "status": 201 if ok and i % 2 == 0 else (200 if ok else 503),
                "ok": ok,
                "order_id": i if i % 2 == 0 and ok else None,
                "idempotency_key": f"k{i}" if i % 2 == 0 else "",
                "error": "" if ok else "HTTP 503",
            }
        )
    df = pd.DataFrame(rows)
    df["order_id"] = df["order_id"].astype("Int64")
    return df


def fake_result(
    out: Path,
    runbook: str = "db-failover",
    *,
    verdict: str = "pass",
    started: str | None = None,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    fault: str | None = "host-crash",
    mode: str = "drill",
) -> dict[str, Any]:
    """Write OUT/result.json (and a notebook, its HTML, traffic and journal) for a run."""
    from datetime import UTC, datetime

    out.mkdir(parents=True, exist_ok=True)
    run = Run.start(runbook, mode, params or {"mode": mode, "fault": fault or ""})
    if started:
        run.started_at = started
    run.metrics.update(
        metrics
        or {
            "rto_s": 4.25,
            "lost_writes": 0,
            "acked_writes": 400,
            "failed_requests": 3,
            "total_requests": 900,
            "p50_ms": 12.5,
            "p99_ms": 10004.248880,
        }
    )
    if fault:
        run.fault = {
            "kind": fault,
            "target": "h1",
            "injected_at": run.started_at,
            "reverted_at": run.started_at,
        }
    if verdict == "fail":
        run.fail("verify", "lost writes: 2")
    run.finish()
    run.finished_at = started or iso(datetime.now(UTC))
    doc = run.to_dict()
    assert validate(doc) == []
    run.save(out)
    (out / f"{runbook}.ipynb").write_text('{"cells": []}\n')
    (out / f"{runbook}.html").write_text("<html><body>executed</body></html>\n")
    save_records(records(), out / "traffic.csv")
    (out / "faults.jsonl").write_text('{"event": "intent"}\n')
    return doc
