"""The run lock held by another process (the lock is re-entrant within one)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from typing import Any


def _hold(
    home: str, name: str, is_lab: bool, what: str, kw: dict[str, Any], ready: Any, done: Any
) -> None:
    os.environ["FAULTBOOK_HOME"] = home
    from faultbook import lock

    with lock.hold(lock.Key(name, is_lab), what, **kw):
        ready.set()
        done.wait(60)


@contextlib.contextmanager
def held_elsewhere(name: str, is_lab: bool, what: str, **kw: Any) -> Iterator[None]:
    """Hold the inventory's run lock in a child process for the ``with`` block."""
    ready, done = multiprocessing.Event(), multiprocessing.Event()
    p = multiprocessing.Process(
        target=_hold, args=(os.environ["FAULTBOOK_HOME"], name, is_lab, what, kw, ready, done)
    )
    p.start()
    try:
        if not ready.wait(20):
            raise RuntimeError("the child process did not take the lock")
        yield
    finally:
        done.set()
        p.join(20)
