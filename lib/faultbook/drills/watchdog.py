"""The watchdog of a lab fault: a detached process that reverts it if nobody else does.

Lab faults (host-crash; partition and delay-loss on the lab) act on the
controller, so no timer on the host undoes them. ``Procedure.inject`` starts
one watchdog per lab fault, before injecting it::

    python -m faultbook.drills.watchdog RUN_DIR ENTRY_ID

The process is detached (double fork, its own session), so it outlives the
notebook's kernel and ``faultbook run`` even when they are SIGKILLed; its
output goes to ``RUN_DIR/watchdog-ENTRY_ID.log``. It waits (``poll``) until

- the journal records the fault reverted (by the drill or the runner): it exits;
- the process that injected the fault (the kernel; pid and start time from the
  journal's intent) is gone: it rolls the fault back at once;
- the entry's deadline (intent time + max_s, which the drill bounds by its
  duration) passes: it rolls the fault back.

The rollback goes through ``Journal.rollback`` (the journal's lock; the fault
probed first, so a fault already reverted is only recorded). The process never
lives longer than max_s + ``MARGIN_S`` after the intent: an alarm ends it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from faultbook.drills.journal import Entry, Journal, alive
from faultbook.errors import ConditionTimeout
from faultbook.poll import poll

log = logging.getLogger("faultbook.watchdog")

# Time allowed after the deadline for the rollback itself (a lab boot waits up to 120 s).
MARGIN_S = 180.0
# How often the journal and the owner are looked at.
INTERVAL_S = 0.5


def log_path(directory: str | os.PathLike[str], entry: Entry) -> Path:
    return Path(directory) / f"watchdog-{entry.id}.log"


def start(journal: Journal, entry: Entry) -> int:
    """Start the watchdog of ENTRY, detached; return its pid once it runs."""
    out = subprocess.run(
        [sys.executable, "-m", "faultbook.drills.watchdog", "--detach", str(journal.dir), entry.id],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
        cwd="/",
        check=False,
    )
    pid = out.stdout.strip()
    if out.returncode != 0 or not pid.isdigit():
        from faultbook.errors import FaultError

        raise FaultError(
            f"the watchdog for {entry.describe()} did not start (rc={out.returncode}): "
            f"{(out.stderr or out.stdout).strip()[-300:]}"
        )
    return int(pid)


def _seconds_left(entry: Entry) -> float:
    deadline = datetime.fromisoformat(entry.deadline.replace("Z", "+00:00"))
    return (deadline - datetime.now(UTC)).total_seconds()


def watch(journal: Journal, entry_id: str, interval_s: float = INTERVAL_S) -> str:
    """Wait for ENTRY_ID to be reverted, its owner to die, or its deadline; return what ended it."""
    entry = journal.entry(entry_id)
    if entry is None:
        return f"no entry {entry_id} in {journal.path}"
    if not entry.lab:
        return f"{entry.describe()} is not a lab fault: nothing to watch"
    log.info(
        "watching %s (%s): deadline %s, owner pid %s",
        entry.describe(),
        entry.id,
        entry.deadline,
        entry.owner.get("pid"),
    )

    def attempt(_t: float) -> str | None:
        e = journal.entry(entry_id)
        if e is None or not e.pending:
            return "reverted"
        if not alive(e.owner):
            return "owner gone"
        return None

    try:
        why = poll(
            attempt,
            max(_seconds_left(entry), 0.0),
            what=f"{entry.describe()} reverted by the drill",
            interval_s=interval_s,
        )
    except ConditionTimeout:
        why = "deadline"
    if why == "reverted":
        e = journal.entry(entry_id)
        by = e.reverted_by if e else "?"
        return f"{entry.describe()} was reverted by {by}; nothing to do"
    r = journal.rollback(entry, by="watchdog")
    reason = (
        "the deadline passed"
        if why == "deadline"
        else f"its owner (pid {entry.owner.get('pid')}) is gone"
    )
    if r.by != "watchdog":
        return f"{reason}, but {r.by} had reverted it meanwhile ({r.outcome}): {r.detail}"
    return f"{reason}: rolled back: {r.outcome}: {r.detail}"


def _detach(directory: str, entry_id: str) -> None:
    """Second fork: print the grandchild's pid and exit; the grandchild goes on."""
    pid = os.fork()
    if pid:
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        os._exit(0)
    with contextlib.suppress(OSError):
        os.setsid()  # its own session, not the intermediate's
    logf = os.open(
        Path(directory) / f"watchdog-{entry_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(logf, 1)
    os.dup2(logf, 2)
    os.close(devnull)
    os.close(logf)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="faultbook.drills.watchdog", description=__doc__)
    ap.add_argument("--detach", action="store_true", help="fork into the background first")
    ap.add_argument("run_dir")
    ap.add_argument("entry_id")
    args = ap.parse_args(argv)
    journal = Journal(args.run_dir)
    entry = journal.entry(args.entry_id)
    if entry is None:
        sys.stderr.write(f"watchdog: no entry {args.entry_id} in {journal.path}\n")
        return 2
    if args.detach:
        _detach(args.run_dir, args.entry_id)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Bounded whatever happens: max_s + margin after the intent, then SIGALRM ends it.
    signal.alarm(max(1, int(_seconds_left(entry) + MARGIN_S)))
    started = time.monotonic()
    try:
        outcome = watch(journal, args.entry_id)
    except Exception:  # the log says why; the exit status too
        log.exception("watchdog for %s failed", entry.describe())
        return 1
    log.info("%s (after %.1f s); exiting", outcome, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
