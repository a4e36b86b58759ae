"""matplotlib figures for the runbooks. Times are UTC."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(
    ("module://", "nbagg")
) else None
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
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
