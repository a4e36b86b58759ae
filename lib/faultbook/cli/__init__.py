"""The ``faultbook`` command: the operations the runbooks perform, for shells, CI and cron.

One module per command group; importing them registers their commands on ``main``.
"""

from __future__ import annotations

import sys

# papermill imports nbformat, which imports jsonschema, whose format checkers
# import rfc3987_syntax if it is installed (jupyter's dependencies install it):
# it builds a parser at import, about a second of every `faultbook run` before
# the notebook starts, a second an autopilot failover waits. Nothing this
# command validates uses its "iri" formats, so the command does without it.
sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]

from faultbook.cli import (  # noqa: E402, F401
    alerts,
    audit,
    backup,
    history,
    lab,
    logs,
    oncall,
    run,
    schedule,
    stack,
    suite,
)
from faultbook.cli.base import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    main()
