"""Shared helpers of the alert receiver's unit tests: payloads, a fake `faultbook run`."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

# A stand-in for `faultbook run RUNBOOK -p NAME VALUE … --out DIR --lock-wait S`: it
# records its argv and trigger, takes the inventory's run lock like the real one
# (exit 75 when it stays busy), writes result.json and exits with FAKE_RUN_EXIT.
FAKE_RUN = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from faultbook import lock
    from faultbook.errors import InventoryBusy

    argv = sys.argv[1:]
    out = Path(argv[argv.index("--out") + 1])
    wait_s = float(argv[argv.index("--lock-wait") + 1])
    params, i = {}, 1
    while i < len(argv):
        if argv[i] == "-p":
            params[argv[i + 1]] = argv[i + 2]
            i += 3
        else:
            i += 1
    (out / "argv.json").write_text(json.dumps(
        {"argv": argv, "params": params, "trigger": os.environ.get("FAULTBOOK_TRIGGER")}))
    code = int(os.environ.get("FAKE_RUN_EXIT", "0"))
    try:
        with lock.hold(lock.key(params.get("inventory", "lab")), "run " + argv[0],
                       wait_s=wait_s):
            time.sleep(float(os.environ.get("FAKE_RUN_SLEEP", "0")))
    except InventoryBusy as exc:
        print("faultbook: error:", exc)
        sys.exit(75)
    (out / "result.json").write_text(json.dumps({"verdict": "pass" if code == 0 else "fail"}))
    sys.exit(code)
    """
)


def fake_command(tmp: Path):  # type: ignore[no-untyped-def]
    script = tmp / "fake_run.py"
    script.write_text(FAKE_RUN)

    def command(runbook: str, params: Any, out: Path, wait_s: float) -> list[str]:
        from faultbook.alerts.dispatch import cli_value

        argv = [sys.executable, str(script), runbook]
        for k, v in params.items():
            argv += ["-p", k, cli_value(v)]
        return [*argv, "--out", str(out), "--lock-wait", f"{wait_s:g}"]

    return command


def alert(
    name: str,
    labels: dict[str, str] | None = None,
    *,
    status: str = "firing",
    fingerprint: str = "a1b2c3d4e5f60718",
    starts_at: str = "2026-12-01T10:00:00.123456789Z",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "severity": "critical", **(labels or {})},
        "annotations": {"summary": f"{name} fired"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T10:05:00Z",
        "generatorURL": "http://mon1:9090/graph?g0.expr=up",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any], status: str | None = None) -> dict[str, Any]:
    first = alerts[0]
    return {
        "version": "4",
        "groupKey": "{}:{alertname=" + json.dumps(first["labels"]["alertname"]) + "}",
        "truncatedAlerts": 0,
        "status": status or first["status"],
        "receiver": "faultbook-webhook",
        "groupLabels": {"alertname": first["labels"]["alertname"]},
        "commonLabels": dict(first["labels"]),
        "commonAnnotations": dict(first["annotations"]),
        "externalURL": "http://mon1:9093",
        "alerts": list(alerts),
    }


def body(*alerts: dict[str, Any]) -> bytes:
    return json.dumps(notification(*alerts)).encode()
