"""Unit tests for the drill figures in faultbook.plots (Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure

from faultbook.drills import traffic
from faultbook.report import plots

T = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def records(seconds: int = 6, fail: tuple[float, float] = (2.0, 3.5)) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    for i in range(seconds * 10):
        sent = T + timedelta(seconds=i / 10)
        kind = "POST" if i % 2 else "GET"
        bad = fail[0] <= i / 10 < fail[1]
        status = 0 if bad and kind == "GET" else 503 if bad else 201 if kind == "POST" else 200
        rows.append(
            {
                "seq": i,
                "kind": kind,
                "sent_at": sent,
                "answered_at": sent + timedelta(milliseconds=5 + i),
                "latency_ms": 5.0 + i,
                "status": status,
                "ok": not bad,
                "order_id": i if kind == "POST" and not bad else None,
                "idempotency_key": f"k{i}" if kind == "POST" else "",
                "error": "" if not bad else "timeout" if status == 0 else "HTTP 503",
            }
        )
    return traffic._frame(rows)


def prom_frame() -> pd.DataFrame:
    ts = pd.Series(pd.date_range(T, periods=6, freq="1s", tz="UTC"))
    parts = []
    for server, values in (("app1", [1, 1, 0, 0, 1, 1]), ("app2", [1] * 6)):
        parts.append(
            pd.DataFrame({"timestamp": ts, "value": values, "instance": "lb1", "server": server})
        )
    return pd.concat(parts, ignore_index=True)


MARKERS: dict[str, datetime | None] = {
    "fault injected": T + timedelta(seconds=2),
    "detected": T + timedelta(seconds=2.5),
    "action": None,
    "recovered": T + timedelta(seconds=3.5),
}


def marker_lines(ax: Any) -> list[Any]:
    return [ln for ln in ax.lines if ln.get_linestyle() == "--"]


def test_requests_per_second_bins() -> None:
    rate = plots.requests_per_second(records())
    assert len(rate) == 6
    assert list(rate["ok"] + rate["failed"]) == [10] * 6
    assert list(rate["failed"]) == [0, 0, 10, 5, 0, 0]
    assert str(pd.DatetimeIndex(rate.index).tz) == "UTC"


def test_timeline_with_prometheus_panel() -> None:
    fig = plots.timeline(
        records(), MARKERS, prom=prom_frame(), prom_title="server up", title="failover"
    )
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 3
    for ax in axes:
        lines = marker_lines(ax)
        assert [ln.get_label() for ln in lines] == ["fault injected", "detected", "recovered"]
        assert len({ln.get_color() for ln in lines}) == 3
    rate_ax, latency_ax, prom_ax = axes
    assert {ln.get_label() for ln in rate_ax.lines} >= {"ok / s", "failed / s"}
    assert latency_ax.get_yscale() == "log"
    labels = {c.get_label() for c in latency_ax.collections}
    assert {"POST", "GET", "POST failed"} <= labels
    assert "GET failed" not in labels  # failed GETs got no answer (status 0)
    series = [ln.get_label() for ln in prom_ax.lines if ln.get_linestyle() != "--"]
    assert series == ["server=app1", "server=app2"]
    assert prom_ax.get_ylabel() == "server up"
    assert fig.get_suptitle() == "failover"
    texts = [t.get_text() for t in rate_ax.texts]
    assert texts == ["fault injected", "detected", "recovered"]


def test_timeline_without_prometheus_and_markers() -> None:
    for markers, prom in ((None, None), ({}, prom_frame().iloc[0:0])):
        fig = plots.timeline(records(), markers, prom=prom)
        assert len(fig.axes) == 2
        assert all(marker_lines(ax) == [] for ax in fig.axes)


def test_timeline_on_empty_records() -> None:
    fig = plots.timeline(traffic._frame([]), MARKERS)
    assert len(fig.axes) == 2
    assert "no requests" in [t.get_text() for t in fig.axes[0].texts]
    assert len(marker_lines(fig.axes[1])) == 3


def test_drills_summary_chart() -> None:
    rows = pd.DataFrame(
        {
            "drill": ["app1 down", "primary down", "lb1 down"],
            "rto_s": [1.5, 12.25, float("nan")],
            "lost_writes": [0, 2, None],
            "failed_requests": [10, 240, 3],
        }
    )
    fig = plots.drills_summary_chart(rows)
    (ax,) = fig.axes
    assert isinstance(ax.containers[0], BarContainer)
    assert [bar.get_height() for bar in ax.containers[0]] == [1.5, 12.25, 0.0]
    texts = [t.get_text() for t in ax.texts]
    assert texts[1] == "12.2 s\nlost 2\nfailed 240"
    assert texts[2].startswith("n/a\nlost n/a")
    empty = plots.drills_summary_chart(rows.iloc[0:0])
    assert [t.get_text() for t in empty.axes[0].texts] == ["no drills"]


def test_combined_timeline() -> None:
    later = records(4, fail=(1.0, 1.5))
    later["sent_at"] += pd.Timedelta(hours=1)
    drills: list[tuple[str, pd.DataFrame, dict[str, datetime | None]]] = [
        ("app1 down", records(), MARKERS),
        ("lb1 down", later, {"fault injected": T + timedelta(hours=1, seconds=1)}),
        ("nothing", traffic._frame([]), {}),
    ]
    fig = plots.combined_timeline(drills)
    assert len(fig.axes) == 3
    first, second, third = fig.axes
    assert len(marker_lines(first)) == 3 and len(marker_lines(second)) == 1
    # relative time: each row's fault is at x = 0
    assert marker_lines(first)[0].get_xdata()[0] == 0.0
    assert marker_lines(second)[0].get_xdata()[0] == 0.0
    assert marker_lines(first)[1].get_xdata()[0] == pytest.approx(0.5)
    assert "t = 0: fault injected" in first.get_title()
    assert "no requests" in [t.get_text() for t in third.texts]
    assert len(plots.combined_timeline([]).axes) == 1
