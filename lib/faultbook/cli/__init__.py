"""The ``faultbook`` command: the operations the runbooks perform, for shells, CI and cron.

One module per command group; importing them registers their commands on ``main``.
"""

from __future__ import annotations

from faultbook.cli import alerts, audit, backup, lab, run, stack, suite  # noqa: F401 - registers them
from faultbook.cli.base import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    main()
