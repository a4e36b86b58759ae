"""faultbook.logs and `faultbook logs` on recorded journalctl JSON (fixtures/logs/).

mon1.jsonl and mon2.jsonl are what the two receivers answer: the same
entries with their own cursors (journal-remote keeps the sender's boot id and
timestamps, not its sequence numbers); mon1 holds one entry twice (a resent
upload), mon2 has two entries mon1 lacks (mon1 was down).
"""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from faultbook import cli, inventory, logs, results, ssh
from faultbook.errors import InventoryError, LogQueryError, LogsError, SSHError
from faultbook.inventory import Host, Inventory
from faultbook.ssh import CommandResult

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
NOW = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def lab() -> Inventory:
    return inventory.load("lab")


class Receivers:
    """ssh.run for the mon hosts: each answers its fixture, fails, or is down."""

    def __init__(self, **answers: str | SSHError | CommandResult) -> None:
        self.answers = answers
        self.commands: dict[str, str] = {}
        self.sudo: dict[str, bool] = {}

    def __call__(
        self,
        inv: Inventory,
        host: str | Host,
        command: str,
        timeout: float = 10,
        sudo: bool = False,
    ) -> CommandResult:
        name = host.name if isinstance(host, Host) else host
        self.commands[name] = command
        self.sudo[name] = sudo
        answer = self.answers[name]
        if isinstance(answer, SSHError):
            raise answer
        if isinstance(answer, CommandResult):
            return answer
        return CommandResult(name, 0, answer, "")


def fixture(name: str) -> str:
    return (FIXTURES / f"{name}.jsonl").read_text()


@pytest.fixture
def both(monkeypatch: pytest.MonkeyPatch) -> Receivers:
    fake = Receivers(mon1=fixture("mon1"), mon2=fixture("mon2"))
    monkeypatch.setattr(ssh, "run", fake)
    return fake


def test_copies_from_both_receivers_are_one_row_each(lab: Inventory, both: Receivers) -> None:
    got = logs.read(lab, since="2026-12-07T07:59:00Z", until="2026-12-07T08:01:00Z")
    df = got.frame
    assert list(df.columns) == logs.COLUMNS
    assert got.answered_by == ("mon1", "mon2") and not got.missing
    # mon1: 5 lines (one twice), mon2: 6 lines; 4 shared -> 6 entries
    assert len(df) == 6
    assert df["time"].is_monotonic_increasing
    assert str(df["time"].dt.tz) == "UTC"
    first = df.iloc[0]
    assert first["time"] == pd.Timestamp("2026-12-07T08:00:00Z")
    assert (first["host"], first["unit"], first["priority"], first["priority_name"]) == (
        "db1",
        "postgresql@15-main.service",
        3,
        "err",
    )
    assert "FATAL:  password authentication failed" in first["message"]
    # same db1 FATAL text 3 s later in another entry: kept, it is another line
    assert (df["host"] == "db1").sum() == 2


def test_fields_as_the_journal_writes_them(lab: Inventory, both: Receivers) -> None:
    got = logs.read(lab, since="2026-12-06T00:00:00Z", until="2026-12-08T00:00:00Z")
    df = got.frame.set_index("host")
    ledger = df.loc["web1"].set_index("unit").loc["ledger.service"]
    assert ledger["message"] == "request body \ufffd\ufffd dropped"  # a byte array, not UTF-8
    assert ledger["identifier"] == "gunicorn"
    kernel = df.loc["lb1"]
    assert (kernel["unit"], kernel["priority_name"]) == ("kernel", "crit")
    upload = df.loc["mon2"]
    assert upload["message"].splitlines()[1] == "retrying"  # a field given twice


def test_the_command_carries_every_filter(lab: Inventory, both: Receivers) -> None:
    logs.read(
        lab,
        hosts=["web", "db1"],
        units=["ledger", "postgresql@15-main.service"],
        since="2026-12-07T08:00:00Z",
        until="2026-12-07T09:00:00+01:00",
        priority="err",
        limit=50,
    )
    assert both.sudo == {"mon1": True, "mon2": True}
    argv = shlex.split(both.commands["mon1"])
    assert argv[0] == "journalctl" and "--directory=/var/log/journal/remote" in argv
    assert {"--output=json", "--all", "--quiet", "--lines=50", "--priority=3"} <= set(argv)
    assert "--reverse" in argv  # with --since, --lines keeps the newest entries only so
    since = datetime(2026, 12, 7, 8, tzinfo=UTC).timestamp()
    assert f"--since=@{since:.6f}" in argv and f"--until=@{since:.6f}" in argv
    hosts = [a for a in argv if a.startswith("_HOSTNAME=")]
    assert hosts == ["_HOSTNAME=web1", "_HOSTNAME=web2", "_HOSTNAME=web3", "_HOSTNAME=db1"]
    units = [a for a in argv if a.startswith("_SYSTEMD_UNIT=")]
    assert units == ["_SYSTEMD_UNIT=ledger.service", "_SYSTEMD_UNIT=postgresql@15-main.service"]


def test_one_receiver_down_is_named_and_the_other_answers(
    lab: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Receivers(
        mon1=SSHError("mon1", "no answer on 10.77.0.51:22 within 1.5s"), mon2=fixture("mon2")
    )
    monkeypatch.setattr(ssh, "run", fake)
    got = logs.read(lab, since="2026-12-06T00:00:00Z", until="2026-12-08T00:00:00Z")
    assert got.answered_by == ("mon2",)
    assert got.missing == {"mon1": "no answer on 10.77.0.51:22 within 1.5s"}
    assert len(got.frame) == 6
    assert "mon1 did not answer (no answer on 10.77.0.51:22 within 1.5s)" in got.summary()


def test_a_failing_journalctl_counts_as_no_answer(
    lab: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = CommandResult(
        "mon2", 1, "", "Failed to open /var/log/journal/remote: No such file or directory\n"
    )
    fake = Receivers(mon1=fixture("mon1"), mon2=broken)
    monkeypatch.setattr(ssh, "run", fake)
    got = logs.read(lab, since="2026-12-06T00:00:00Z", until="2026-12-08T00:00:00Z")
    assert got.answered_by == ("mon1",)
    assert got.missing["mon2"].startswith(
        "journalctl failed: Failed to open /var/log/journal/remote"
    )
    assert len(got.frame) == 4


def test_no_receiver_answering_is_an_error_naming_each(
    lab: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Receivers(
        mon1=SSHError("mon1", "no answer on 10.77.0.51:22 within 1.5s"),
        mon2=CommandResult("mon2", 0, "{not json\n", ""),
    )
    monkeypatch.setattr(ssh, "run", fake)
    with pytest.raises(LogsError) as err:
        logs.read(lab)
    msg = str(err.value)
    assert msg.startswith("no receiver of the central logs answered")
    assert (
        "mon1: no answer" in msg and "mon2: mon2: line 1 of journalctl's answer is not JSON" in msg
    )


def test_an_empty_answer_is_an_empty_frame(lab: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "run", Receivers(mon1="", mon2=""))
    got = logs.read(lab, hosts="web1", priority="crit")
    assert got.frame.empty and list(got.frame.columns) == logs.COLUMNS
    assert got.summary() == "0 line(s) from mon1, mon2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-07T08:00:00Z", datetime(2026, 12, 7, 8, tzinfo=UTC)),
        ("2026-12-07 08:00:00", datetime(2026, 12, 7, 8, tzinfo=UTC)),  # naive: UTC
        ("2026-12-07T09:00:00+01:00", datetime(2026, 12, 7, 8, tzinfo=UTC)),
        ("-15min", datetime(2026, 12, 7, 8, 15, tzinfo=UTC)),
        ("-2h", datetime(2026, 12, 7, 6, 30, tzinfo=UTC)),
        ("-30s", datetime(2026, 12, 7, 8, 29, 30, tzinfo=UTC)),
        ("-1d", datetime(2026, 12, 6, 8, 30, tzinfo=UTC)),
        ("now", NOW),
    ],
)
def test_times(text: str, expected: datetime) -> None:
    assert logs.parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday-ish", "-15 fortnights", "2026-13-45", ""])
def test_a_time_that_does_not_parse_says_what_is_expected(text: str) -> None:
    with pytest.raises(LogQueryError, match="expected ISO 8601"):
        logs.parse_time(text, NOW)


def test_priorities() -> None:
    assert logs.parse_priority("err") == 3 and logs.parse_priority("ERR") == 3
    assert logs.parse_priority(4) == 4 and logs.parse_priority("warning") == 4
    assert logs.parse_priority(None) is None
    with pytest.raises(LogQueryError, match="expected one of emerg, alert, crit, err"):
        logs.parse_priority("loud")
    with pytest.raises(LogQueryError):
        logs.parse_priority("8")


def test_bad_input_is_refused_before_any_receiver_is_asked(
    lab: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = Receivers()
    monkeypatch.setattr(ssh, "run", fake)
    with pytest.raises(InventoryError, match="unknown host 'web9'.*known hosts: lb1, lb2, web1"):
        logs.read(lab, hosts=["web9"])
    with pytest.raises(LogQueryError, match="is after --until"):
        logs.read(lab, since="2026-12-07T09:00:00Z", until="2026-12-07T08:00:00Z")
    with pytest.raises(LogQueryError, match="not a systemd unit name"):
        logs.read(lab, units=["ledger; rm -rf /"])
    assert fake.commands == {}


def test_the_receivers_come_from_the_inventory(lab: Inventory) -> None:
    assert [h.name for h in logs.receivers(lab)] == ["mon1", "mon2"]
    other = Inventory(
        lab.path, lab.hosts, lab.groups, {**lab.vars, "journal_receiver_group": "backup"}
    )
    assert [h.name for h in logs.receivers(other)] == ["backup1"]


# ------------------------------------------------------------------ a run's errors
def test_run_errors_keep_counts_per_host_and_unit(lab: Inventory, both: Receivers) -> None:
    errs = logs.run_errors(
        lab, ["db1", "web1", "lb1"], "2026-12-07T07:59:00Z", "2026-12-07T08:01:00Z"
    )
    assert "--priority=3" in shlex.split(both.commands["mon1"])
    # the fake answers every line regardless of filters; the counts are the frame's
    counts = errs.counts
    assert counts.iloc[0].to_dict() == {
        "host": "db1",
        "unit": "postgresql@15-main.service",
        "lines": 2,
    }
    rec = errs.record()
    assert rec["errors"]["db1"] == {"postgresql@15-main.service": 2}
    assert rec["errors"]["web1"] == {"ledger.service": 1, "ssh.service": 1}
    assert rec["answered_by"] == ["mon1", "mon2"] and rec["note"] is None
    assert rec["since"] == "2026-12-07T07:59:00.000Z"
    assert errs.summary().startswith("6 error line(s) on lb1, web1, db1 (from mon1, mon2)")


def test_run_errors_never_fail_a_runbook_when_the_logs_cannot_be_read(
    lab: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = SSHError("mon1", "no answer"), SSHError("mon2", "no answer")
    monkeypatch.setattr(ssh, "run", Receivers(mon1=down[0], mon2=down[1]))
    errs = logs.run_errors(lab, ["web1"], "-10min")
    assert errs.lines.empty and errs.counts.empty
    assert errs.note is not None and errs.note.startswith("central logs not read: no receiver")
    assert errs.summary() == errs.note and errs.record()["errors"] == {}
    no_mon = Inventory(
        lab.path, lab.hosts, lab.groups, {**lab.vars, "journal_receiver_group": "nope"}
    )
    assert "unknown group 'nope'" in str(logs.run_errors(no_mon, None, "-10min").note)


# ------------------------------------------------------------------ the command
def invoke(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli.main, list(args))
    return res.exit_code, res.stdout, res.stderr


def test_cli_prints_one_line_per_entry_and_who_answered(both: Receivers) -> None:
    code, out, err = invoke(
        "logs", "--since", "2026-12-07T07:59:00Z", "--until", "2026-12-07T08:01:00Z"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 7  # six entries, one message of two lines
    assert lines[6].strip() == "retrying" and lines[6].startswith(" " * 40)
    assert (
        lines[1]
        == "2026-12-07T08:00:01.000Z web1 ssh.service err deploy: faultbook-logs-probe 3f9a"
    )
    assert err.strip() == "faultbook: logs: 6 line(s) from mon1, mon2"


def test_cli_json(both: Receivers) -> None:
    code, out, _ = invoke(
        "logs", "--json", "--host", "web1", "--since", "2026-12-06", "--until", "2026-12-08"
    )
    assert code == 0
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows[0]["time"] == "2026-12-07T08:00:00.000000Z" and rows[0]["priority"] == 3
    assert {"time", "host", "unit", "priority", "priority_name", "message"} <= set(rows[0])
    assert "--lines=10000" in shlex.split(both.commands["mon2"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "db9"], "unknown host 'db9'"),
        (["--since", "last tuesday"], "time 'last tuesday' does not parse; expected ISO 8601"),
        (["--priority", "loud"], "priority 'loud' is not a journal priority"),
        (["--unit", "a b"], "unit 'a b' is not a systemd unit name"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(
    both: Receivers, args: list[str], message: str
) -> None:
    code, out, err = invoke("logs", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("faultbook: error: ") and message in err
    assert "Traceback" not in out + err and both.commands == {}


def test_cli_no_receiver_is_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        ssh, "run", Receivers(mon1=SSHError("mon1", "down"), mon2=SSHError("mon2", "down"))
    )
    code, _, err = invoke("logs")
    assert code == 1 and "no receiver of the central logs answered (mon1: down; mon2: down)" in err


def test_a_runbook_keeps_the_counts_in_result_json(
    lab: Inventory, both: Receivers, tmp_path: Path
) -> None:
    run = results.Run.start("health-check", "incident", {})
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    run.started_at = results.iso(started)
    errs = logs.errors_of_run(run, lab, ["db", "web", "nosuchgroup"])
    assert "_HOSTNAME=db1" in both.commands["mon1"] and "_HOSTNAME=web3" in both.commands["mon1"]
    assert f"--since=@{started.timestamp():.6f}" in both.commands["mon2"]
    assert list(errs.table(2).columns) == ["time", "host", "unit", "priority_name", "message"]
    assert len(errs.table(2)) == 2
    doc = json.loads(Path(run.save(tmp_path)).read_text())  # the schema accepts it
    assert doc["logs"]["errors"]["db1"] == {"postgresql@15-main.service": 2}
    assert doc["logs"]["hosts"][:3] == ["web1", "web2", "web3"]


def test_a_runbook_whose_groups_this_inventory_lacks_gets_a_note(
    lab: Inventory, both: Receivers, tmp_path: Path
) -> None:
    run = results.Run.start("health-check", "incident", {})
    errs = logs.errors_of_run(run, lab, ["frontends"])
    assert errs.note is not None and "unknown host 'frontends'" in errs.note
    assert both.commands == {}
    doc = json.loads(Path(run.save(tmp_path)).read_text())
    assert doc["logs"]["errors"] == {} and doc["logs"]["note"] == errs.note
    assert results.validate({**doc, "logs": {**doc["logs"], "errors": {"web1": {"x": 0}}}})


def test_triage_reads_every_hosts_errors_of_the_last_15_minutes(
    lab: Inventory, both: Receivers, tmp_path: Path
) -> None:
    from faultbook.triage import steps

    run = results.Run.start("triage", "incident", {})
    before = datetime.now(UTC).timestamp()
    errs = steps.recent_errors(run, lab)
    since = float(both.commands["mon1"].split("--since=@")[1].split()[0].strip("'\""))
    assert before - 15 * 60 - 2 < since <= datetime.now(UTC).timestamp() - 15 * 60
    assert not errs.hosts and "_HOSTNAME=" not in both.commands["mon1"]  # every host
    doc = json.loads(Path(run.save(tmp_path)).read_text())
    assert doc["logs"]["errors"]["db1"] == {"postgresql@15-main.service": 2}
