"""The security audit's parameter checks: one-line ParameterErrors naming the value and
what is expected (the runbook's set-up calls them before anything runs)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from faultbook.errors import ParameterError

_PORTS = re.compile(r"^\d{1,5}(-\d{1,5})?(,\d{1,5}(-\d{1,5})?)*$")


def number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ParameterError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")
    if not lo <= value <= hi:
        raise ParameterError(f"{name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)


def check_ports(spec: str) -> str:
    """nmap's port list syntax, each port in 1-65535 ('1-65535', '22,80,8000-8100')."""
    text = str(spec).replace(" ", "")
    ok = bool(_PORTS.match(text))
    if ok:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi or lo)
            ok = ok and 1 <= a <= b <= 65535
    if not ok:
        raise ParameterError(
            f"tcp_ports must be ports or ranges in 1-65535 separated by commas "
            f"(e.g. 1-65535 or 22,80,443), got {spec!r}"
        )
    return text


def check_result_dir(result_dir: str) -> str:
    if not result_dir:
        return ""
    d = Path(result_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ParameterError(
            f"result_dir {result_dir!r} cannot be created ({exc.strerror}); expected a writable "
            "directory"
        ) from None
    if not os.access(d, os.W_OK | os.X_OK):
        raise ParameterError(
            f"result_dir {result_dir!r} is not writable; expected a writable directory"
        )
    return str(d)
