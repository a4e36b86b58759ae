"""matplotlib figures for the runbooks. Times are UTC."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(
    ("module://", "nbagg")
) else None
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def health_chart(df: pd.DataFrame) -> Figure:
    """Memory, disk and load per host; unreachable hosts are marked in red."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    hosts = list(df["host"])
    colours = ["tab:blue" if r else "tab:red" for r in df["reachable"]]
    for ax, col, label in zip(
        axes,
        ("mem_used_pct", "disk_used_pct", "load1"),
        ("memory used (%)", "disk used (%)", "load (1 min)"),
        strict=True,
    ):
        values = pd.to_numeric(df[col], errors="coerce").fillna(0.0)
        ax.barh(hosts, values, color=colours)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        if col.endswith("_pct"):
            ax.set_xlim(0, 100)
    axes[0].invert_yaxis()
    down = [h for h, r in zip(hosts, df["reachable"], strict=True) if not r]
    title = "host health" + (f" — unreachable: {', '.join(down)}" if down else "")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# -- drill timelines ----------------------------------------------------------

# Marker colours stay clear of the data's: green ok, red failed, blue/orange POST/GET.
MARKER_COLOURS = {
    "fault injected": "black",
    "detected": "tab:purple",
    "action": "tab:brown",
    "recovered": "tab:cyan",
    "fault reverted": "tab:olive",
}
_SPARE_COLOURS = ("tab:pink", "tab:gray", "gold", "navy", "tab:blue", "tab:orange")
_SERIES_LABELS = ("instance", "server", "backend", "proxy", "job", "__name__")


def _utc(value: Any) -> pd.Timestamp:
    """A Timestamp in UTC; a naive value is taken to be UTC already."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _naive_utc(values: Any) -> Any:
    """Times (Series, Timestamp, datetime) as naive UTC numpy datetime64[ns] for matplotlib."""
    if isinstance(values, pd.Series):
        s = pd.to_datetime(values, utc=True)
        return s.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return _utc(values).tz_localize(None).to_datetime64()


def _marker_colours(markers: Mapping[str, datetime | None]) -> dict[str, str]:
    spare = iter(_SPARE_COLOURS * 4)
    out = {}
    used = set()
    for name in markers:
        colour = MARKER_COLOURS.get(name)
        if colour is None or colour in used:
            colour = next(c for c in spare if c not in used)
        used.add(colour)
        out[name] = colour
    return out


LABEL_GAP_PT = 11.0  # a rotated 8 pt label's width, and a point to spare


def _label_offsets(xs: Sequence[float], gap: float = LABEL_GAP_PT) -> list[float]:
    """Where each rotated label goes, in points right of its line: beside it, unless
    the label to its left would overlap, then just right of that one. XS are the
    lines' positions in points, in any order; the result is in the same order."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    edge = -math.inf
    for i in order:
        at = max(xs[i] + 2.0, edge + gap)
        out[i] = at - xs[i]
        edge = at
    return out


def _draw_markers(
    axes: Sequence[Axes],
    markers: Mapping[str, Any],
    colours: Mapping[str, str],
    to_x: Any = _naive_utc,
) -> None:
    """A dashed vertical line per marker on every axis, its name on the top one.

    The names are rotated, in their line's colour, on a white ground; markers closer
    than a label's width (detected and recovered within a second in a minute's
    window) have their names set side by side instead of on top of each other.
    """
    live = [(name, to_x(when)) for name, when in markers.items() if when is not None]
    if not live or not axes:
        return
    for name, x in live:
        for ax in axes:
            ax.axvline(x, linestyle="--", linewidth=1.2, color=colours[name], label=name)
    top = axes[0]
    lo, hi = top.get_xlim()
    width_pt = top.bbox.width * 72.0 / top.figure.dpi  # before the layout: an estimate
    span = (hi - lo) or 1.0
    pts = [(float(top.convert_xunits(x)) - lo) / span * width_pt for _, x in live]
    for (name, x), dx in zip(live, _label_offsets(pts), strict=True):
        top.annotate(
            name,
            xy=(x, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(dx, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            ha="left",
            fontsize=8,
            color=colours[name],
            bbox={
                "boxstyle": "square,pad=0.1",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.85,
            },
        )


def requests_per_second(records: pd.DataFrame) -> pd.DataFrame:
    """Requests by second of ``sent_at`` (UTC, 1 s bins): columns ``ok`` and ``failed``."""
    if len(records) == 0:
        return pd.DataFrame(
            {"ok": pd.Series([], dtype="int64"), "failed": pd.Series([], dtype="int64")},
            index=pd.DatetimeIndex([], tz="UTC", name="second"),
        )
    sec = pd.to_datetime(records["sent_at"], utc=True).dt.floor("1s")
    ok = records["ok"].astype(bool).to_numpy()
    frame = pd.DataFrame({"second": sec, "ok": ok.astype(int), "failed": (~ok).astype(int)})
    counts = frame.groupby("second")[["ok", "failed"]].sum()
    full = pd.date_range(counts.index.min(), counts.index.max(), freq="1s", name="second")
    return counts.reindex(full, fill_value=0).astype("int64")


def _plot_rate(ax: Axes, records: pd.DataFrame, x_of: Any = _naive_utc) -> None:
    rate = requests_per_second(records)
    if rate.empty:
        ax.text(0.5, 0.5, "no requests", transform=ax.transAxes, ha="center", va="center")
    else:
        # one point per bin, drawn as a step over the whole second
        edges = pd.Series(list(rate.index) + [rate.index[-1] + pd.Timedelta(seconds=1)])
        x = x_of(edges)
        for col, colour in (("ok", "tab:green"), ("failed", "tab:red")):
            y = list(rate[col]) + [int(rate[col].iloc[-1])]
            ax.step(x, y, where="post", color=colour, label=f"{col} / s")
    ax.set_ylabel("requests / s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _plot_latency(ax: Axes, records: pd.DataFrame) -> None:
    answered = records[records["status"] != 0] if len(records) else records
    styles = {
        ("POST", True): ("o", "tab:blue", "POST"),
        ("GET", True): ("^", "tab:orange", "GET"),
        ("POST", False): ("o", "tab:red", "POST failed"),
        ("GET", False): ("^", "darkred", "GET failed"),
    }
    drawn = False
    for (kind, ok), (marker, colour, label) in styles.items():
        part = answered[(answered["kind"] == kind) & (answered["ok"].astype(bool) == ok)]
        if part.empty:
            continue
        ax.scatter(
            _naive_utc(part["sent_at"]),
            part["latency_ms"].to_numpy(dtype=float),
            s=9,
            marker=marker,
            color=colour,
            alpha=0.7,
            label=label,
        )
        drawn = True
    if drawn and (answered["latency_ms"] > 0).any():
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    if not drawn:
        ax.text(0.5, 0.5, "no answers", transform=ax.transAxes, ha="center", va="center")
    ax.set_ylabel("latency (ms)")
    ax.grid(alpha=0.3)


def _series_label(labels: Mapping[str, Any], varying: Sequence[str]) -> str:
    shown = [f"{k}={labels[k]}" for k in varying if labels.get(k, "") != ""]
    return ", ".join(shown) or "value"


def _plot_prom(ax: Axes, prom: pd.DataFrame, prom_title: str) -> None:
    label_cols = [c for c in prom.columns if c not in ("timestamp", "value")]
    varying = [c for c in label_cols if prom[c].astype(str).nunique() > 1]
    preferred = [c for c in _SERIES_LABELS if c in varying]
    varying = preferred or varying
    if label_cols:
        groups = prom.groupby(label_cols, sort=True, dropna=False)
        for key, part in groups:
            keys = key if isinstance(key, tuple) else (key,)
            labels = dict(zip(label_cols, keys, strict=True))
            part = part.sort_values("timestamp")
            ax.plot(
                _naive_utc(part["timestamp"]),
                part["value"].to_numpy(dtype=float),
                label=_series_label(labels, varying),
                linewidth=1.2,
            )
    else:
        part = prom.sort_values("timestamp")
        ax.plot(_naive_utc(part["timestamp"]), part["value"].to_numpy(dtype=float), label="value")
    ax.set_ylabel(prom_title or "Prometheus")
    ax.grid(alpha=0.3)


def _legend(ax: Axes, outside: bool = False) -> None:
    """One entry per label; OUTSIDE puts it right of the axes, clear of the data and of
    the markers' names (the timelines)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    unique = dict(zip(labels, handles, strict=True))
    if outside:
        ax.legend(
            unique.values(),
            unique.keys(),
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            fontsize=8,
        )
    else:
        ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=8, ncol=2)


def timeline(
    records: pd.DataFrame,
    markers: Mapping[str, datetime | None] | None = None,
    prom: pd.DataFrame | None = None,
    prom_title: str = "",
    title: str = "",
) -> Figure:
    """A drill on one time axis (UTC): requests/s, latency, and a Prometheus query.

    Panels: ok and failed requests per second of ``sent_at``; the latency of
    each answered request by kind (log scale); the series of ``prom`` (a
    ``monitoring.query_range`` frame), left out when ``prom`` is None or empty.
    Each non-None marker is a dashed vertical line on every panel.
    """
    markers = dict(markers or {})
    has_prom = prom is not None and not prom.empty
    n = 3 if has_prom else 2
    fig, axes_arr = plt.subplots(n, 1, figsize=(12, 2.8 * n + 0.6), sharex=True, squeeze=False)
    axes = list(axes_arr[:, 0])
    _plot_rate(axes[0], records)
    _plot_latency(axes[1], records)
    if has_prom:
        assert prom is not None
        _plot_prom(axes[2], prom, prom_title)
    _draw_markers(axes, markers, _marker_colours(markers))
    for ax in axes:
        _legend(ax, outside=True)
    axes[-1].set_xlabel("time (UTC)")
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def drills_summary_chart(rows: pd.DataFrame) -> Figure:
    """RTO per drill as bars, each annotated with its lost writes and failed requests.

    ``rows`` has columns ``drill``, ``rto_s``, ``lost_writes``, ``failed_requests``;
    a missing value shows as "n/a".
    """
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(rows) + 2), 4.0))
    if len(rows) == 0:
        ax.text(0.5, 0.5, "no drills", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    names = [str(d) for d in rows["drill"]]
    rto = pd.to_numeric(rows["rto_s"], errors="coerce")
    bars = ax.bar(names, rto.fillna(0.0), color="tab:blue")

    def fmt(v: Any) -> str:
        return "n/a" if pd.isna(v) else f"{int(v)}"

    for bar, r, lost, failed in zip(
        bars, rto, rows["lost_writes"], rows["failed_requests"], strict=True
    ):
        rto_text = "n/a" if pd.isna(r) else f"{r:.1f} s"
        ax.annotate(
            f"{rto_text}\nlost {fmt(lost)}\nfailed {fmt(failed)}",
            xy=(bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color="tab:red" if not pd.isna(lost) and lost > 0 else "black",
        )
    top = float(rto.max()) if rto.notna().any() else 0.0
    ax.set_ylim(0, max(top * 1.35, 1.0))
    ax.set_ylabel("RTO (s)")
    ax.set_title("drills: recovery time, lost writes, failed requests")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def combined_timeline(
    drills: Sequence[tuple[str, pd.DataFrame, Mapping[str, datetime | None]]],
) -> Figure:
    """One row per drill: ok and failed requests per second, with that drill's markers.

    Drills ran at different times, so each row's x axis is seconds relative to
    its "fault injected" marker (or to its first request when it has none);
    the rows share that axis.
    """
    n = max(len(drills), 1)
    fig, axes_arr = plt.subplots(n, 1, figsize=(12, 2.2 * n + 0.8), sharex=True, squeeze=False)
    axes = list(axes_arr[:, 0])
    if not drills:
        axes[0].text(0.5, 0.5, "no drills", transform=axes[0].transAxes, ha="center")
        return fig
    for ax, (name, records, markers) in zip(axes, drills, strict=True):
        fault = markers.get("fault injected")
        if fault is not None:
            t0, origin = _utc(fault), "fault injected"
        elif len(records):
            t0, origin = pd.to_datetime(records["sent_at"], utc=True).min(), "first request"
        else:
            t0, origin = None, ""

        def rel(values: Any, t0: Any = t0) -> Any:
            if isinstance(values, pd.Series):
                return (pd.to_datetime(values, utc=True) - t0).dt.total_seconds().to_numpy()
            return (_utc(values) - t0).total_seconds()

        if t0 is None:
            ax.text(0.5, 0.5, "no requests", transform=ax.transAxes, ha="center", va="center")
        else:
            _plot_rate(ax, records, rel)
        live = {k: v for k, v in markers.items() if v is not None}
        if t0 is not None:
            _draw_markers([ax], live, _marker_colours(live), rel)
        ax.set_title(f"{name}" + (f" (t = 0: {origin})" if origin else ""), fontsize=10)
        ax.set_ylabel("req / s")
        _legend(ax, outside=True)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    return fig


# -- backups and restores -------------------------------------------------------

BACKUP_COLOURS = {"full": "tab:blue", "diff": "tab:orange", "incr": "tab:green"}


def backup_timeline(
    backups_df: pd.DataFrame, markers: Mapping[str, datetime | None] | None = None
) -> Figure:
    """One horizontal bar per backup from its start to its stop (UTC), coloured by type.

    ``backups_df`` is a ``backup.backups`` frame. Each bar is labelled with
    the backup's label, duration and size; a backup of a few seconds is drawn
    at least 0.4 % of the axis wide so it stays visible. Markers (a restore
    target, say) are dashed vertical lines.
    """
    n = len(backups_df)
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.45 * max(n, 1)))
    if n == 0:
        ax.text(0.5, 0.5, "no backups", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    starts = pd.to_datetime(backups_df["start"], utc=True)
    stops = pd.to_datetime(backups_df["stop"], utc=True)
    live = {k: v for k, v in (markers or {}).items() if v is not None}
    times = [*starts, *stops, *(_utc(v) for v in live.values())]
    span = max(max(times) - min(times), pd.Timedelta(minutes=1))
    min_width = span * 0.004
    sizes = pd.to_numeric(backups_df["size"], errors="coerce").astype(float) / 2**20
    for i, (label, kind) in enumerate(zip(backups_df["label"], backups_df["type"], strict=True)):
        start, stop = starts.iloc[i], stops.iloc[i]
        width = max(stop - start, min_width)
        ax.barh(
            i,
            width.to_timedelta64(),
            left=_naive_utc(start),
            height=0.6,
            color=BACKUP_COLOURS.get(str(kind), "tab:gray"),
            label=str(kind),
        )
        size = "" if pd.isna(sizes.iloc[i]) else f", {sizes.iloc[i]:.0f} MiB"
        ax.annotate(
            f" {label} ({(stop - start).total_seconds():.0f} s{size})",
            xy=(_naive_utc(start + width), i),
            va="center",
            ha="left",
            fontsize=8,
        )
    _draw_markers([ax], live, _marker_colours(live))
    ax.set_yticks(range(n), [str(t) for t in backups_df["type"]])
    ax.invert_yaxis()
    ax.set_xlim(_naive_utc(min(times) - span * 0.02), _naive_utc(max(times) + span * 0.35))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M"))
    ax.set_xlabel("time (UTC)")
    ax.set_title(f"backups ({n}), oldest at the top")
    ax.grid(axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def archived_total(prom_df: pd.DataFrame) -> pd.Series:
    """Segments archived by all series together since the first sample, counter resets included.

    A drop in a series' counter is a restart from 0, so the new value is
    what it archived since. Indexed by timestamp.
    """
    label_cols = [c for c in prom_df.columns if c not in ("timestamp", "value")]
    parts = []
    for _, part in prom_df.groupby(label_cols, sort=True) if label_cols else [(None, prom_df)]:
        part = part.sort_values("timestamp")
        values = part["value"].astype(float)
        step = values.diff().fillna(0.0)
        step = step.where(step >= 0, values)
        parts.append(pd.Series(step.to_numpy(), index=pd.to_datetime(part["timestamp"], utc=True)))
    return pd.concat(parts).groupby(level=0).sum().cumsum()


def wal_archived(prom_df: pd.DataFrame, title: str = "") -> Figure:
    """Archived WAL segments over time, one line per db host.

    ``prom_df`` is a ``monitoring.query_range`` frame of
    ``pg_stat_archiver_archived_count``: a counter per PostgreSQL instance
    that restarts at 0 when the server does (only a primary archives). The
    thick black line adds up what every instance archived since the first
    sample (``archived_total``), across restarts and failovers.
    """
    fig, ax = plt.subplots(figsize=(12, 3.6))
    if prom_df is None or prom_df.empty:
        ax.text(0.5, 0.5, "no samples", transform=ax.transAxes, ha="center", va="center")
    else:
        _plot_prom(ax, prom_df, "WAL segments archived")
        total = archived_total(prom_df)
        ax.plot(
            _naive_utc(pd.Series(total.index)),
            total.to_numpy(),
            color="black",
            linewidth=2.0,
            label="all hosts since start",
        )
        ax.set_ylim(bottom=0)
        _legend(ax)
    ax.set_xlabel("time (UTC)")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.set_title(title or "archived WAL segments (pg_stat_archiver_archived_count)")
    fig.tight_layout()
    return fig


def restore_throughput(df: pd.DataFrame, title: str = "") -> Figure:
    """Restore throughput in MiB/s, per run or over time.

    Per run: columns ``run``, ``bytes`` and ``seconds``, optionally
    ``raw_bytes_per_s`` (a raw copy of the same bytes on the same disk):
    a bar per run, the raw copy beside it and the ratio above.
    Over time: columns ``timestamp`` and ``bytes`` (bytes restored so far,
    sampled during one restore): the rate between samples.
    """
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(df) + 3), 3.8))
    if len(df) == 0:
        ax.text(0.5, 0.5, "no restores", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    mib = 2.0**20
    if "timestamp" in df.columns:
        part = df.sort_values("timestamp")
        ts = pd.to_datetime(part["timestamp"], utc=True)
        dt = ts.diff().dt.total_seconds()
        rate = (part["bytes"].astype(float).diff() / dt).fillna(0.0).clip(lower=0) / mib
        ax.step(_naive_utc(ts), rate.to_numpy(), where="pre", color="tab:blue", label="restore")
        ax.set_xlabel("time (UTC)")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    else:
        runs = [str(r) for r in df["run"]]
        rate = df["bytes"].astype(float) / df["seconds"].astype(float) / mib
        x = list(range(len(runs)))
        has_raw = "raw_bytes_per_s" in df.columns
        w = 0.4 if has_raw else 0.6
        bars = ax.bar([i - (w / 2 if has_raw else 0) for i in x], rate, w, label="restore")
        if has_raw:
            raw = df["raw_bytes_per_s"].astype(float) / mib
            ax.bar([i + w / 2 for i in x], raw, w, color="tab:gray", label="raw copy")
            for bar, r, c in zip(bars, rate, raw, strict=True):
                if pd.notna(c) and c > 0:
                    ax.annotate(
                        f"{r / c:.2f}× raw",
                        xy=(bar.get_x() + w, max(r, c)),
                        xytext=(0, 3),
                        textcoords="offset points",
                        ha="center",
                        fontsize=8,
                    )
        ax.set_xticks(x, runs)
        ax.set_xlabel("run")
    ax.set_ylabel("MiB / s")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "restore throughput")
    _legend(ax)
    fig.tight_layout()
    return fig


def stress_chart(
    steps: pd.DataFrame, slo_p99_ms: float, capacity_rps: float | None = None
) -> Figure:
    """Latency (p50, p99) against the offered load of a stress ramp, with the SLO's
    p99 line; the achieved rate on a second axis; the capacity marked."""
    fig, ax = plt.subplots(figsize=(9, 4.2))
    if len(steps) == 0:
        ax.text(0.5, 0.5, "no ramp step ran", transform=ax.transAxes, ha="center", va="center")
        ax.set_axis_off()
        return fig
    x = pd.to_numeric(steps["offered_rps"], errors="coerce")
    ax.plot(x, steps["p50_ms"], "o-", color="tab:blue", label="p50 latency")
    ax.plot(x, steps["p99_ms"], "s-", color="tab:orange", label="p99 latency")
    broke = ~steps["holds_slo"].astype(bool)
    ax.scatter(
        x[broke],
        steps.loc[broke, "p99_ms"],
        s=120,
        facecolors="none",
        edgecolors="tab:red",
        linewidths=2,
        label="SLO broken",
        zorder=3,
    )
    ax.axhline(
        slo_p99_ms, color="tab:red", linestyle="--", linewidth=1, label=f"SLO p99 {slo_p99_ms:g} ms"
    )
    if capacity_rps is not None:
        ax.axvline(
            capacity_rps,
            color="tab:green",
            linestyle=":",
            linewidth=1.5,
            label=f"capacity {capacity_rps:g} req/s",
        )
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    twin = ax.twinx()
    twin.plot(x, steps["achieved_rps"], "^:", color="tab:gray", label="answered ok (req/s)")
    twin.set_ylabel("answered ok (requests/s)")
    twin.set_ylim(0, max(float(x.max()), float(steps["achieved_rps"].max())) * 1.1)
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, loc="upper left", fontsize=8)
    ax.set_title("stress ramp: latency against offered load")
    fig.tight_layout()
    return fig
