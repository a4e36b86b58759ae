"""The Prometheus alert rules pass `promtool check rules` and their unit tests.

The rules are static files (playbooks/roles/monitoring/files/rules/*.yml) and
their unit tests live in tests/promtool/*_test.yml. Two contract tests check
that the metrics the rules use are the ones their producers emit: the custom
queries of postgres_exporter and the pgBackRest textfile script.

promtool comes from Debian's `prometheus` package. The tests look for it in
this order:

- FAULTBOOK_PROMTOOL, a command line split like a shell would, for example
  ``chroot /tmp/imgtest/root promtool``. promtool then may not see this
  checkout, so the rules and tests are copied into a scratch directory under
  the root it runs in: FAULTBOOK_PROMTOOL_ROOT if set, else ROOT when the
  command starts with ``chroot ROOT``.
- ``promtool`` on PATH.

Without either, the promtool tests are skipped and say why. The coverage test
(every alert has a case where it fires and one where it stays quiet) needs no
promtool.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = Path("playbooks/roles/monitoring/files/rules")
TESTS_DIR = Path("tests/promtool")
RULE_FILES = sorted((REPO / RULES_DIR).glob("*.yml"))
TEST_FILES = sorted((REPO / TESTS_DIR).glob("*_test.yml"))
QUERIES = REPO / "playbooks/roles/postgres_exporter/files/queries.yaml"
BACKUP_SCRIPT = REPO / "playbooks/roles/monitoring/files/faultbook-pgbackrest-metrics"
PGBACKREST_INFO = REPO / TESTS_DIR / "fixtures/pgbackrest-info.json"


@dataclass(frozen=True)
class Promtool:
    """How to run promtool, and where it sees a copy of the rules and tests."""

    command: list[str]
    workdir: Path  # the copy, as promtool sees it

    def run(self, *args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *map(str, args)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _promtool_command() -> tuple[list[str], Path | None]:
    """The promtool command and the root directory it runs in (None: ours)."""
    configured = os.environ.get("FAULTBOOK_PROMTOOL", "").strip()
    if configured:
        command = shlex.split(configured)
        root = os.environ.get("FAULTBOOK_PROMTOOL_ROOT")
        if root:
            return command, Path(root)
        if command[0] == "chroot" and len(command) > 2:
            return command, Path(command[1])
        return command, None
    found = shutil.which("promtool")
    if found is None:
        # `make unit` points FAULTBOOK_PROMTOOL at the lab image; there a missing promtool
        # is a failure, not a skip.
        (pytest.fail if os.environ.get("FAULTBOOK_PROMTOOL_REQUIRED") else pytest.skip)(
            "promtool not found: install Debian's `prometheus` package or set "
            "FAULTBOOK_PROMTOOL (e.g. 'chroot /path/to/lab/image promtool')"
        )
    return [found], None


def _copy_tree(dest: Path) -> None:
    """Copy rules and promtool tests, keeping their relative layout."""
    for subdir, files in ((RULES_DIR, RULE_FILES), (TESTS_DIR, TEST_FILES)):
        (dest / subdir).mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copy2(path, dest / subdir / path.name)


@pytest.fixture(scope="module")
def promtool() -> Iterator[Promtool]:
    command, root = _promtool_command()
    base = (root / "tmp") if root is not None else None
    scratch = Path(tempfile.mkdtemp(prefix="faultbook-promtool-", dir=base))
    try:
        _copy_tree(scratch)
        seen_as = Path("/") / scratch.relative_to(root) if root is not None else scratch
        yield Promtool(command=command, workdir=seen_as)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _alert_names(rule_file: Path) -> set[str]:
    groups = yaml.safe_load(rule_file.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_there_are_rules_and_tests() -> None:
    assert RULE_FILES, f"no rule files in {RULES_DIR}"
    assert TEST_FILES, f"no promtool tests in {TESTS_DIR}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = set().union(*(_alert_names(f) for f in RULE_FILES))
    fires: set[str] = set()
    quiet: set[str] = set()
    tested_rule_files: set[Path] = set()
    for test_file in TEST_FILES:
        spec = yaml.safe_load(test_file.read_text())
        for rule_file in spec["rule_files"]:
            tested_rule_files.add((test_file.parent / rule_file).resolve())
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert {f.resolve() for f in RULE_FILES} <= tested_rule_files
    assert not alerts - fires, f"alerts never shown firing: {sorted(alerts - fires)}"
    assert not alerts - quiet, f"alerts never shown quiet: {sorted(alerts - quiet)}"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_rules_pass_promtool_check(promtool: Promtool, rule_file: Path) -> None:
    result = promtool.run("check", "rules", promtool.workdir / RULES_DIR / rule_file.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(promtool: Promtool, test_file: Path) -> None:
    result = promtool.run("test", "rules", promtool.workdir / TESTS_DIR / test_file.name)
    assert result.returncode == 0, result.stdout + result.stderr


def _load_backup_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader(
        "faultbook_pgbackrest_metrics", str(BACKUP_SCRIPT)
    )
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _render_backup_metrics() -> str:
    script = _load_backup_script()
    stanzas = json.loads(PGBACKREST_INFO.read_text())
    text: str = script.render(stanzas, max_age=93600, now=1795800000.0)
    return text


def _used_metrics(rule_file: Path, prefix: str) -> set[str]:
    return set(re.findall(rf"\b({prefix}[a-z0-9_]+)", rule_file.read_text()))


def test_postgres_rules_use_metrics_the_custom_queries_define() -> None:
    queries = yaml.safe_load(QUERIES.read_text())
    defined = {
        f"{name}_{column}"
        for name, query in queries.items()
        for metric in query["metrics"]
        for column in metric
    }
    used = _used_metrics(REPO / RULES_DIR / "postgres.yml", "pg_replication_")
    assert used, "postgres.yml no longer uses the custom replication metrics"
    assert used <= defined, f"not defined in queries.yaml: {sorted(used - defined)}"


def test_backup_rules_use_metrics_the_textfile_script_writes() -> None:
    text = _render_backup_metrics()
    written = set(re.findall(r"^(faultbook_pgbackrest_[a-z0-9_]+)[{ ]", text, re.MULTILINE))
    used = _used_metrics(REPO / RULES_DIR / "backup.yml", "faultbook_pgbackrest_")
    assert used, "backup.yml no longer uses the pgBackRest metrics"
    assert used <= written, f"not written by the script: {sorted(used - written)}"
    # The fixture holds one full and one differential backup of stanza main.
    assert (
        'faultbook_pgbackrest_last_backup_timestamp_seconds{stanza="main",type="diff"} 1795792735'
        in text
    )
    assert 'faultbook_pgbackrest_last_backup_timestamp_seconds{stanza="main",type="incr"} 0' in text
    assert "faultbook_pgbackrest_info_success 1" in text


def test_backup_metrics_without_pgbackrest_say_so() -> None:
    text = _load_backup_script().render(None, max_age=93600, now=1795800000.0)
    assert "faultbook_pgbackrest_info_success 0" in text
    assert "last_backup_timestamp_seconds" not in text


def test_backup_metrics_pass_promtool_check_metrics(promtool: Promtool) -> None:
    result = promtool.run("check", "metrics", stdin=_render_backup_metrics())
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ the log counter
LOG_SCRIPT = REPO / "playbooks/roles/journal/files/faultbook-log-metrics"


def _entry(host: str, ident: str, message: str | list[int]) -> dict[str, object]:
    """One entry of journalctl -o json, with the fields the log counter asks for."""
    return {"_HOSTNAME": host, "SYSLOG_IDENTIFIER": ident, "MESSAGE": message}


PG_PANIC = '[1-1] PANIC:  could not write to file "pg_wal/xlogtemp.81": No space left on device'
LOG_ENTRIES = [
    _entry(
        "db1", "postgres", "[812-1] FATAL:  terminating connection due to administrator command"
    ),
    _entry("db1", "postgres", PG_PANIC),
    _entry("db1", "postgres", "[9-1] ERROR:  duplicate key value violates unique constraint"),
    _entry("web2", "sshd", "Invalid user admin from 10.77.0.250 port 40022"),
    # the same refused attempt's second line (seen on the lab): not counted again
    _entry("web2", "sshd", "Connection closed by invalid user admin 10.77.0.250 port 40022"),
    _entry("web2", "sshd", "Failed password for deploy from 10.77.0.1 port 50120 ssh2"),
    _entry(
        "web2", "sshd", list(b"Connection closed by authenticating user deploy 10.77.0.1 port 5")
    ),
    _entry("web2", "sshd", "Accepted publickey for deploy from 10.77.0.1 port 50122 ssh2"),
    _entry("web3", "gunicorn", "FATAL: not PostgreSQL, not counted"),
]


def _load_log_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("faultbook_log_metrics", str(LOG_SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_the_log_counter_counts_each_kind_per_host() -> None:
    script = _load_log_script()
    counts = script.count(LOG_ENTRIES)
    assert counts == {("postgres_fatal", "db1"): 2, ("sshd_auth_failure", "web2"): 3}
    # a restarted uploader sends the entry at its cursor again: the same entry counts once
    stamped = [
        {**e, "_BOOT_ID": "b1", "__MONOTONIC_TIMESTAMP": str(i), "__REALTIME_TIMESTAMP": str(i)}
        for i, e in enumerate(LOG_ENTRIES)
    ]
    assert script.count([*stamped, stamped[0], stamped[4]]) == counts
    assert (
        script.count([*stamped, {**stamped[0], "__MONOTONIC_TIMESTAMP": "99"}])[
            ("postgres_fatal", "db1")
        ]
        == 3
    )  # the same text at another time is another line
    text = script.render(counts, 60.0, 1795800000.0)
    assert 'faultbook_log_lines{host="db1",kind="postgres_fatal"} 2' in text
    assert "faultbook_log_metrics_success 1" in text
    failed = script.render(None, 60.0, 1795800000.0)
    assert "faultbook_log_metrics_success 0" in failed and "faultbook_log_lines{" not in failed


def test_log_rules_use_metrics_the_log_counter_writes() -> None:
    script = _load_log_script()
    text = script.render(script.count(LOG_ENTRIES), 60.0, 1795800000.0)
    written = set(re.findall(r"^(faultbook_log_[a-z0-9_]+)[{ ]", text, re.MULTILINE))
    rules = (REPO / RULES_DIR / "logs.yml").read_text()
    used = _used_metrics(REPO / RULES_DIR / "logs.yml", "faultbook_log_")
    assert {"faultbook_log_lines", "faultbook_log_metrics_timestamp_seconds"} <= used
    assert used <= written, f"not written by the script: {sorted(used - written)}"
    kinds = set(re.findall(r'kind="([a-z_]+)"', rules))
    assert kinds and kinds <= set(script.KINDS), kinds


def test_log_metrics_pass_promtool_check_metrics(promtool: Promtool) -> None:
    script = _load_log_script()
    text = script.render(script.count(LOG_ENTRIES), 60.0, 1795800000.0)
    result = promtool.run("check", "metrics", stdin=text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_file_is_installed() -> None:
    """The monitoring role loads the files it lists: a rule file left out never runs."""
    listed = yaml.safe_load((REPO / "playbooks/roles/monitoring/vars/main.yml").read_text())
    assert sorted(listed["monitoring_rule_files"]) == sorted(f.name for f in RULE_FILES)
