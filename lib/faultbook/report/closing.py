"""How a runbook ends: steady state again, and the figures it shows (the drill's timeline
with the runbook's Prometheus series, the WAL archive)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from matplotlib.figure import Figure

from faultbook import inventory as inventory_mod
from faultbook.drills.procedure import Procedure, SteadyState
from faultbook.drills.steps import DRILLS
from faultbook.errors import FaultbookError
from faultbook.report import plots
from faultbook.stack import monitoring

log = logging.getLogger(__name__)


@dataclass
class Closing:
    """The end of a runbook: the stack's state afterwards and the drill's timeline."""

    steady: SteadyState
    figure: Figure | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return str(self.steady)


def close(p: Procedure, title: str = "") -> Closing:
    """Wait for steady state (recorded as a step), then the timeline of a drill's load."""
    steady = p.wait_steady()
    if p.traffic is None:
        return Closing(steady)
    recs = p.traffic.records()
    spec = DRILLS.get(p.runbook)
    prom = None
    if spec is not None and spec.promql and len(recs):
        prom = monitoring.query_range(
            p.inv, spec.promql, recs["sent_at"].min(), recs["answered_at"].max(), step_s=1
        )
    fig = plots.timeline(
        recs,
        p.markers,
        prom,
        prom_title=spec.prom_title if spec else "",
        title=title or f"{p.runbook} ({p.mode})",
    )
    return Closing(steady, fig)


def wal_archive_plot(inv: inventory_mod.Inventory, hours: float = 1.0) -> Figure | None:
    """Archived WAL segments per db host over the last hours, or None (with a note) when
    Prometheus cannot say: the plot is information, not a gate."""
    end = datetime.now(UTC)
    try:
        arch = monitoring.query_range(
            inv, "pg_stat_archiver_archived_count", end - timedelta(hours=hours), end, step_s=15
        )
    except FaultbookError as exc:
        log.warning("no WAL archive plot: %s", exc)
        return None
    return plots.wal_archived(arch, title=f"archived WAL segments, last {hours:g} hour(s)")
