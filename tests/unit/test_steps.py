"""The runbooks' step helpers: parameter checks before anything runs, objectives, faults."""

from __future__ import annotations

from typing import Any

import pytest

from faultbook.drills import faults, steps
from faultbook.errors import InventoryError, ParameterError, RestoreTargetError


def drill_ns(**over: Any) -> dict[str, Any]:
    ns: dict[str, Any] = {
        "inventory": "lab",
        "mode": "drill",
        "target": "",
        "fault": "service-kill",
        "load_rps": 20.0,
        "duration_s": 30.0,
        "max_failed_requests": 0,
        "max_lost_writes": 0,
        "detect_timeout_s": 15.0,
        "confirm": False,
        "result_dir": "/tmp/x",
    }
    ns.update(over)
    return ns


def test_objectives_leave_out_minus_one_and_refuse_nan_and_negatives() -> None:
    assert steps.objectives(
        {"max_rto_s": 30.0, "max_lost_writes": 0, "max_failed_requests": -1}
    ) == {
        "rto_s": 30.0,
        "lost_writes": 0.0,
    }
    for bad in (float("nan"), -2, "3"):
        with pytest.raises(ParameterError, match="max_rto_s must be a number >= 0, or -1"):
            steps.objectives({"max_rto_s": bad})


def test_begin_records_the_declared_parameters_but_not_result_dir() -> None:
    p = steps.begin("web-node-failure", drill_ns(target="web2"))
    assert p.run.parameters["target"] == "web2"
    assert "result_dir" not in p.run.parameters
    assert p.run.objectives == {"failed_requests": 0.0, "lost_writes": 0.0}
    assert p.mode == "drill" and p.inv.is_lab


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"mode": "drll"}, ParameterError, "mode must be one of incident, drill"),
        ({"fault": "delay-loss"}, ParameterError, "delay-loss"),
        ({"target": "db1"}, InventoryError, "db1 is not in group web"),
        ({"target": "web9"}, InventoryError, "unknown host 'web9'"),
        ({"load_rps": float("nan")}, ParameterError, "load_rps"),
        ({"duration_s": -5.0}, ParameterError, "duration_s"),
    ],
)
def test_begin_refuses_bad_parameters_in_one_line(
    over: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as exc:
        steps.begin("web-node-failure", drill_ns(**over))
    assert "\n" not in str(exc.value)


def test_fault_acts_on_the_runbooks_unit() -> None:
    p = steps.begin("web-node-failure", drill_ns())
    kill = steps.fault(p, "service-kill", "web1")
    assert isinstance(kill, faults.ServiceKill) and kill.unit == "ledger.service"
    crash = steps.fault(p, "host-crash", "web1")
    assert isinstance(crash, faults.HostCrash) and not hasattr(crash, "unit")
    lb = steps.begin("lb-failover", drill_ns(fault="service-stop", max_rto_s=-1))
    stop = steps.fault(lb, "service-stop", "lb1")
    assert isinstance(stop, faults.ServiceStop) and stop.unit == "keepalived.service"


def restore_ns(**over: Any) -> dict[str, Any]:
    ns: dict[str, Any] = {
        "inventory": "lab",
        "mode": "verify",
        "drill": False,
        "restore_host": "",
        "backup_label": "",
        "target_kind": "time",
        "target": "",
        "bad_change_time": "",
        "bad_change_table": "orders",
        "bad_change_min_rows": 10,
        "repair": "copy-back",
        "confirm": False,
        "passphrase_file": "",
        "max_full_age_h": 192.0,
        "max_diff_age_h": 48.0,
        "seed_mib": 0.0,
        "load_rps": 20.0,
        "duration_s": 40.0,
        "result_dir": "",
    }
    ns.update(over)
    return ns


def test_restore_begin_picks_the_scratch_host_and_records_it() -> None:
    s = steps.restore_begin(restore_ns())
    assert s.host == "restore1" and s.p.run.parameters["restore_host"] == "restore1"
    assert s.p.mode == "incident" and s.target is None


@pytest.mark.parametrize(
    ("over", "error", "match"),
    [
        ({"mode": "pitrr"}, ParameterError, "mode must be one of verify, pitr"),
        ({"repair": "promote"}, ParameterError, "repair must be 'copy-back'"),
        ({"seed_mib": 10.0}, ParameterError, "only with drill=True"),
        ({"mode": "pitr"}, ParameterError, "pitr needs a target"),
        ({"mode": "pitr", "target": "yesterday"}, RestoreTargetError, "yesterday"),
        ({"bad_change_time": "2999-01-01T00:00:00Z"}, RestoreTargetError, "in the future"),
        ({"restore_host": "db1"}, Exception, "not a scratch host"),
        ({"max_full_age_h": float("nan")}, ParameterError, "max_full_age_h"),
        ({"max_diff_age_h": -1.0}, ParameterError, "max_diff_age_h"),
        ({"passphrase_file": "/nonexistent/pass"}, ParameterError, "cannot be read"),
    ],
)
def test_restore_begin_refuses_bad_parameters_in_one_line(
    over: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as exc:
        steps.restore_begin(restore_ns(**over))
    assert "\n" not in str(exc.value)


def test_a_pitr_incident_keeps_its_parsed_target() -> None:
    s = steps.restore_begin(restore_ns(mode="pitr", target="0/3000060", target_kind="lsn"))
    assert s.target is not None and s.target.kind == "lsn"


@pytest.mark.parametrize(
    ("threshold", "interval", "match"),
    [
        (float("nan"), 0.25, "detection threshold_s must be in"),
        (-1.5, 0.25, "detection threshold_s must be in"),
        (1.5, -0.25, "detection interval_s must be in"),
        (0.3, 0.25, "at least two probe intervals"),
    ],
)
def test_db_failover_refuses_bad_detection_thresholds_in_one_line(
    threshold: float, interval: float, match: str
) -> None:
    ns = drill_ns(
        fault="host-crash",
        target="",
        new_primary="",
        force=False,
        detect_threshold_s=threshold,
        probe_interval_s=interval,
    )
    with pytest.raises(ParameterError, match=match) as exc:
        steps.begin("db-failover", ns)
    assert "\n" not in str(exc.value)
