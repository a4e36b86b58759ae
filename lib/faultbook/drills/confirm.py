"""Confirmations that a person gives: a destructive step asks before it acts.

In incident mode a destructive step runs when the person at the notebook agrees
to it, there and then. The question names what the step will do and to which
host; the answer is the host's name, typed into the notebook's input box
(JupyterLab shows one for ``input()``). Anything else is a refusal and the step
is skipped. Each answer is recorded with its time and who gave it.

Nobody can be asked when the notebook runs unattended: papermill (``faultbook
run``, suites, the alert receiver) and nbval execute it with no input channel,
so ``input()`` raises ``StdinNotImplementedError``; without ``confirm=True``
the step is skipped, as before. ``confirm=True`` is a standing confirmation,
for unattended incident runs: nobody is asked, and the record says so.

Outside a Jupyter kernel (a plain ``python`` process, a unit test) nobody is
asked either: ``ask_in_notebook`` returns None.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from faultbook.results import utcnow

# An asker puts a question to a person and returns the answer, or None when nobody
# can be asked (unattended). Injectable, so the decision is tested without a kernel.
Asker = Callable[[str], "str | None"]

BY_PARAMETER = "parameter confirm=True"


@dataclass(frozen=True)
class Confirmation:
    """One question and its answer, as result.json keeps it."""

    what: str
    host: str
    granted: bool
    answer: str  # what the person typed, or "confirm=True"
    by: str  # who answered: a login, or "parameter confirm=True"
    at: str  # UTC, ISO 8601

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kernel() -> Any:
    """The IPython kernel this code runs in, or None."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    shell = get_ipython()
    return getattr(shell, "kernel", None) if shell is not None else None


def ask_in_notebook(question: str) -> str | None:
    """Ask in the notebook (JupyterLab's input box); None when there is nobody to ask:
    not in a kernel, or a kernel without an input channel (papermill, nbval)."""
    if _kernel() is None:
        return None
    from IPython.core.error import StdinNotImplementedError

    try:
        return input(question)
    except StdinNotImplementedError:
        return None
    except EOFError:
        return ""


def question(what: str, host: str) -> str:
    return f"CONFIRM: {what}. Type {host} to go ahead (anything else skips it): "


def decide(what: str, host: str, confirm: bool, asker: Asker) -> Confirmation | None:
    """WHAT on HOST may run: ``confirm=True`` is a standing confirmation (recorded as
    such, nobody is asked); otherwise the person at the notebook is asked. None when
    nobody could be asked (an unattended run without ``confirm``): the step is skipped."""
    if confirm:
        return Confirmation(what, host, True, "confirm=True", BY_PARAMETER, utcnow())
    answer = asker(question(what, host))
    if answer is None:
        return None
    typed = answer.strip()
    return Confirmation(what, host, typed == host, typed, getpass.getuser(), utcnow())
