"""One exception root, a child per subsystem.

Every error carries the facts a person needs to act on it. The CLI turns
them into one line and an exit code (``exit_code``): 2 for usage errors
(bad input that changed nothing), 1 for operational failures.
"""

from __future__ import annotations


class FaultbookError(Exception):
    """Root of every faultbook error."""

    exit_code = 1


class UsageError(FaultbookError):
    """The caller asked for something that does not exist or is malformed."""

    exit_code = 2


class ConfigError(UsageError):
    """The environment is not set up as faultbook needs (root, tools, FAULTBOOK_HOME)."""


class InventoryError(UsageError):
    """An inventory file is missing or malformed, or a host is not in it."""


class ParameterError(UsageError):
    """A runbook parameter is unknown or has the wrong type."""


class RunbookNotFound(UsageError):
    """No runbook with that name."""


class ParseError(FaultbookError, ValueError):
    """Text that does not parse as what it should be (an LSN, a WAL name, a probe's output).

    Also a ValueError, so a parser's caller may treat it as one; callers that parse
    what a person typed turn it into a usage error naming the parameter.
    """


class ResultError(FaultbookError, ValueError):
    """A result.json document (or a value for one) that does not conform to its schema."""


class BenchError(FaultbookError):
    """A benchmark could not run, or what it measured is wrong (e.g. a restore that differs)."""


class LabError(FaultbookError):
    """The lab could not be brought to the requested state."""


class LabBusy(LabError):
    """Another `faultbook lab` command holds the lab lock."""

    exit_code = 2


class SSHError(FaultbookError):
    """A host could not be reached or refused a command over SSH."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(f"{host}: {message}")
        self.host = host
        self.message = message


class PlaybookFailed(FaultbookError):
    """An Ansible playbook failed; names the host, the task and Ansible's message."""

    def __init__(
        self, playbook: str, rc: int, host: str | None, task: str | None, message: str
    ) -> None:
        where = f" on {host}" if host else ""
        what = f" at task '{task}'" if task else ""
        super().__init__(f"playbook {playbook} failed{where}{what} (rc={rc}): {message}")
        self.playbook = playbook
        self.rc = rc
        self.host = host
        self.task = task
        self.message = message


class DrillAborted(FaultbookError):
    """A drill stopped before it could finish; the stack may need attention."""


class AlertTimeout(DrillAborted):
    """An alert the drill waits for did not fire in time."""


class ConditionTimeout(DrillAborted):
    """A condition (a Prometheus expression, a cluster state, a host coming back) was not
    met in time; raised by ``faultbook.poll.poll``."""


class PreflightFailed(DrillAborted):
    """What a drill's procedure depends on is broken (monitoring, its alert rule, a host,
    the backups): it stops before any fault or load, with the reason."""


class FaultError(DrillAborted):
    """A fault could not be injected or reverted."""


class VerdictFailed(FaultbookError):
    """A runbook's verdict is "fail" (raised at its end so papermill and nbval see it)."""


class StackError(FaultbookError):
    """The stack answered unexpectedly: a query failed, no single primary, a split VIP."""


class PromotionRefused(StackError):
    """No standby can be shown to hold every acknowledged commit (or the old one still runs)."""


class WebTierError(StackError):
    """The load balancers or web nodes are not in the state a procedure needs."""


class PrometheusError(FaultbookError):
    """Prometheus did not answer, or rejected a query (the message names the expression).

    ``transient`` is True when asking again may succeed (no connection, a
    timeout, a 5xx answer) and False when the query itself is wrong.
    """

    def __init__(self, message: str, *, expr: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.expr = expr
        self.transient = transient


class BackupError(FaultbookError):
    """pgBackRest failed, or the repository cannot serve the backup or restore asked for."""


class RestoreTargetError(UsageError):
    """A restore target or backup label no backup in the repository can serve."""


class PassphraseError(BackupError, UsageError):
    """A repository passphrase that does not decrypt the repository (exit 2)."""


class ArchiveError(FaultbookError):
    """The run archive or its audit log cannot be written or read."""


class SuiteError(UsageError):
    """A suite file that does not load or validate (names the suite and the entry)."""


class ScheduleError(UsageError):
    """A schedule that cannot be made: a bad cron expression or name, no scheduler."""


class InventoryBusy(FaultbookError):
    """Another run (``faultbook run``, a suite, a schedule, the alert receiver) holds the
    inventory's run lock. Exit status 75 (EX_TEMPFAIL): try again later."""

    exit_code = 75

    def __init__(self, message: str, holder: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


class AlertPayloadError(UsageError, ValueError):
    """A webhook body that is not Alertmanager's payload version 4 (the message names the
    field). ``http_status`` is what the receiver answers: 400 malformed JSON, 422 a wrong
    version or a schema violation."""

    def __init__(self, message: str, http_status: int = 422) -> None:
        super().__init__(message)
        self.http_status = http_status


class RoutesError(UsageError):
    """An alert routing file (alert-routes.yml) that is malformed; names the route."""


class ReceiverError(FaultbookError):
    """The alert receiver could not be started, stopped or reached."""


class IncidentError(UsageError):
    """An incident or run folder that is not what an on-call command needs (names the folder
    and what was expected): missing, no notebook or result.json, already closed."""


class NotebookServerError(FaultbookError):
    """JupyterLab could not be started for an incident, or did not answer in time."""


class LogQueryError(UsageError):
    """A central-logs query that does not parse: a time, a priority or a unit name (names
    what was given and what is expected)."""


class LogsError(FaultbookError):
    """No receiver of the central logs answered (names each one and why)."""
