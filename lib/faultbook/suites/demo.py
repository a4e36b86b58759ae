"""``faultbook demo`` is a suite: suites/demo.yml run like any suite (the inventory's
lock, each entry from steady state, role targets, every run archived), then the
demo's report (``report.demo.write_report``: summary.md, summary.csv, summary.png,
timeline.png, index.html) over what ran.

The demo holds the inventory's run lock from its first run to its last, marked as a
drill (waiting up to ``LOCK_WAIT_S`` for a run in progress): no run an alert starts
slips in between two of its entries, and the alert receiver queues no recovery
behind them (they recover from their own faults). Busy after that wait, the demo is
recorded as skipped, as any suite is (exit 75).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faultbook import lock
from faultbook.errors import InventoryBusy
from faultbook.report import demo as demo_report
from faultbook.suites import execute, model

SUITE = "demo"
LOCK_WAIT_S = 300.0


@dataclass(frozen=True)
class DemoRun:
    """A finished demo: the suite's outcome and the report's index.html (None when the
    suite did not start because the inventory was busy)."""

    suite: execute.SuiteResult
    index: Path | None

    @property
    def exit_code(self) -> int:
        """0 every entry passed, 1 one failed or was skipped, 75 busy, 128+N interrupted."""
        return self.suite.exit_code


def report(res: execute.SuiteResult, out: Path) -> Path:
    """The demo report over a finished suite run in OUT; returns OUT/index.html."""
    done = [
        demo_report.Done(
            e.entry.name,
            e.entry.runbook,
            out / e.entry.name,
            skipped=e.reason if e.status == "skipped" else "",
        )
        for e in res.entries
    ]
    return demo_report.write_report(out, done)


def build(
    out: Path,
    inventory: str = "lab",
    *,
    lock_wait_s: float = LOCK_WAIT_S,
    trigger: str | None = None,
    **kwargs: Any,
) -> DemoRun:
    """Run the demo suite on INVENTORY into OUT and write its report.

    KWARGS go to ``execute.run_suite`` (entry_timeout_s, and the tests' fakes).
    """
    trigger = trigger or lock.default_trigger()
    suite = model.load(SUITE)
    with contextlib.ExitStack() as held:
        # busy after the wait: run_suite finds it busy as well and records the skip
        with contextlib.suppress(InventoryBusy):
            held.enter_context(
                lock.hold(
                    lock.key(inventory),
                    f"suite {SUITE}",
                    wait_s=lock_wait_s,
                    trigger=trigger,
                    drill=True,
                )
            )
        # run_suite takes the lock again: re-entrant, the record above (a drill) stays
        res = execute.run_suite(suite, inventory, out, trigger=trigger, **kwargs)
    index = report(res, res.out_dir) if res.entries else None
    return DemoRun(res, index)
