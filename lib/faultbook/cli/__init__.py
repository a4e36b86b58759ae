"""The ``faultbook`` command: the operations the runbooks perform, for shells, CI and cron.

One module per command group; importing them registers their commands on ``main``.
"""

from __future__ import annotations

from faultbook.cli import alerts, audit, backup, history, lab, run, schedule, stack, suite  # noqa: F401
from faultbook.cli.base import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    main()
