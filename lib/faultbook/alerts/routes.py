"""The routing file: which alert starts which runbook, with which parameters and policy.

One file per inventory, ``alert-routes.yml`` next to its hosts file (``--routes FILE``
overrides). It is validated on load against the runbooks themselves (their
parameters cell, through ``report.runner``): an unknown runbook, parameter,
placeholder or policy, a value of the wrong type, or an allow-list naming a missing
route is a ``RoutesError`` naming the route, and the receiver refuses to start.
docs/alerts.md describes the format; in short::

    autopilot_allow: [lost-primary]        # routes allowed to run with confirm=True
    defaults: {window: 10m, max_runs: 1, lock: skip, lock_wait: 0}
    routes:
      - name: lost-primary
        match:
          alertname: NoWritablePrimary     # a name, a list, or {regex: ...}
          labels: {severity: critical}     # exact values, or {regex: ...}
          host_group: db                   # the alert's host is in this group
        host_label: instance               # where the host comes from (a list: first present)
        runbook: db-failover
        policy: autopilot                  # prepare | diagnose | autopilot
        fencing: true                      # autopilot only when fencing can be confirmed
        parameters: {target: "{host}"}
        window: 10m                        # dedupe and throttle window
        max_runs: 1                        # runs per window per alert name
        lock: wait                         # the inventory is busy: wait (lock_wait) or skip
        lock_wait: 2m
    unrouted:
      - {alert: TLSCertExpiring, reason: "..."}

Placeholders in parameter values: ``{host}``, ``{address}``, ``{alertname}``,
``{fingerprint}``, ``{starts_at}``, ``{ends_at}``, ``{inventory}``,
``{labels.NAME}``, ``{annotations.NAME}``. The policy sets ``mode`` (incident, when
the runbook has it) and ``confirm`` (True only on autopilot); a route may not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from faultbook.alerts.payload import Alert, iso
from faultbook.errors import FaultbookError, RoutesError
from faultbook.inventory import Host, Inventory
from faultbook.report import runner

FILENAME = "alert-routes.yml"
POLICIES = ("prepare", "diagnose", "autopilot")
LOCK_POLICIES = ("wait", "skip")
DEFAULTS: dict[str, Any] = {"window": 600.0, "max_runs": 1, "lock": "skip", "lock_wait": 0.0}
ROUTE_KEYS = (
    "name",
    "match",
    "host_label",
    "runbook",
    "policy",
    "fencing",
    "parameters",
    "window",
    "max_runs",
    "lock",
    "lock_wait",
    "settle",
)
MATCH_KEYS = ("alertname", "labels", "host_group")
TOP_KEYS = ("autopilot_allow", "defaults", "routes", "unrouted")
PLACEHOLDERS = ("host", "address", "alertname", "fingerprint", "starts_at", "ends_at", "inventory")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\}")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
# Modes an alert never starts: drills inject faults, switchover is a planned change.
REFUSED_MODES = ("drill", "switchover")


@dataclass(frozen=True)
class Matcher:
    """An exact value or a regular expression (matched against the whole value)."""

    exact: tuple[str, ...] = ()
    regex: re.Pattern[str] | None = None

    def __call__(self, value: str | None) -> bool:
        if value is None:
            return False
        if self.regex is not None:
            return self.regex.fullmatch(value) is not None
        return value in self.exact

    def names(self) -> tuple[str, ...]:
        return self.exact


@dataclass(frozen=True)
class Route:
    name: str
    runbook: str
    policy: str  # as written
    effective: str  # what runs: autopilot falls back to prepare when not allowed
    fallback: str  # why it fell back ("" when it did not)
    alertname: Matcher
    labels: Mapping[str, Matcher]
    host_group: str | None
    host_labels: tuple[str, ...]
    parameters: Mapping[str, Any]  # templates: placeholders still in
    window_s: float
    max_runs: int
    lock: str
    lock_wait_s: float
    fencing: bool
    # Act only if the alert still fires this long after the notification (0: at once).
    settle_s: float = 0.0

    @property
    def needs_host(self) -> bool:
        return self.host_group is not None or any(
            _uses(v, ("host", "address")) for v in self.parameters.values()
        )


@dataclass(frozen=True)
class Resolved:
    """What the routes make of one alert: a route and its filled parameters, or why not."""

    route: Route | None
    parameters: dict[str, Any] = field(default_factory=dict)
    host: Host | None = None
    refused: str = ""  # set when an alert matched but cannot be acted on


@dataclass(frozen=True)
class Routes:
    path: Path
    inv: Inventory
    routes: tuple[Route, ...]
    autopilot_allow: tuple[str, ...]
    unrouted: Mapping[str, str]  # alert name -> reason

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        raise RoutesError(f"{self.path}: no route named {name!r}")

    def resolve(self, alert: Alert) -> Resolved:
        """The first route that matches ``alert`` (routes are tried in file order).

        An alert naming a host the inventory lacks is refused at the first route that
        needs its host: it comes from something this inventory does not describe."""
        for r in self.routes:
            if not r.alertname(alert.name) or not all(
                m(alert.labels.get(k)) for k, m in r.labels.items()
            ):
                continue
            host: Host | None = None
            if r.needs_host:
                label, value = host_label(r, alert)
                host = host_of(self.inv, value)
                if host is None:
                    why = (
                        f"the alert's host {value!r} (label {label}) is not a host of "
                        f"inventory {self.inv.name}"
                        if value is not None
                        else f"the alert has no label {' or '.join(r.host_labels)} naming its host"
                    )
                    return Resolved(r, refused=f"route {r.name}: {why}")
                if r.host_group is not None and host.name not in self.inv.groups.get(
                    r.host_group, ()
                ):
                    continue
            try:
                params = fill(r, self.inv, alert, host)
            except FaultbookError as exc:
                return Resolved(r, refused=f"route {r.name}: {exc}")
            return Resolved(r, params, host)
        return Resolved(None)


def default_path(inv: Inventory) -> Path:
    return inv.path.parent / FILENAME


def load(inv: Inventory, path: str | Path | None = None) -> Routes:
    """Read and validate a routing file (default: alert-routes.yml beside the hosts file)."""
    p = Path(path) if path is not None else default_path(inv)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise RoutesError(
            f"{p}: cannot be read ({exc.strerror}); expected a routing file (docs/alerts.md)"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RoutesError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict):
        raise RoutesError(f"{p}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    _no_unknown(p, "the file", doc, TOP_KEYS)
    defaults = {**DEFAULTS, **_mapping(p, "defaults", doc.get("defaults") or {})}
    _no_unknown(p, "defaults", defaults, ("window", "max_runs", "lock", "lock_wait"))
    raw_routes = doc.get("routes") or []
    if not isinstance(raw_routes, list):
        raise RoutesError(f"{p}: routes is a {type(raw_routes).__name__}, expected a list")
    allow = doc.get("autopilot_allow") or []
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise RoutesError(f"{p}: autopilot_allow must be a list of route names")
    names = [r.get("name") if isinstance(r, dict) else None for r in raw_routes]
    routes = tuple(_route(p, inv, i, r, defaults, tuple(allow)) for i, r in enumerate(raw_routes))
    seen: set[str] = set()
    for r in routes:
        if r.name in seen:
            raise RoutesError(f"{p}: route {r.name}: the name is used twice")
        seen.add(r.name)
    for a in allow:
        if a not in names:
            raise RoutesError(
                f"{p}: autopilot_allow names route {a!r}, which does not exist; routes: "
                f"{', '.join(str(n) for n in names) or '(none)'}"
            )
    unrouted = _unrouted(p, doc.get("unrouted") or [])
    for r in routes:
        both = [n for n in r.alertname.names() if n in unrouted]
        if both:
            raise RoutesError(f"{p}: route {r.name}: {both[0]} is also listed under unrouted")
    out = Routes(p, inv, routes, tuple(allow), unrouted)
    for r in routes:  # every route fills its parameters for a sample alert
        try:
            fill(r, inv, sample_alert(r), sample_host(inv, r))
        except FaultbookError as exc:
            raise RoutesError(f"{p}: route {r.name}: {exc}") from None
    return out


def fencing_confirmed(inv: Inventory) -> str:
    """Why the old primary can be fenced before a promotion, or "" when that is unsure.

    The lab powers a host off itself; a real inventory must name ``db_fence_playbook``."""
    if inv.is_lab:
        return "the lab can power off any host"
    playbook = inv.vars.get("db_fence_playbook")
    if isinstance(playbook, str) and playbook.strip():
        return f"inventory {inv.name} fences with {playbook}"
    return ""


def host_label(r: Route, alert: Alert) -> tuple[str, str | None]:
    """The first of the route's host labels the alert carries, and its value."""
    for label in r.host_labels:
        if label in alert.labels:
            return label, alert.labels[label]
    return r.host_labels[0], None


def host_of(inv: Inventory, value: str | None) -> Host | None:
    """The inventory host a label names: its inventory name or address, ``:port`` allowed."""
    if not value:
        return None
    candidates = [value]
    m = re.fullmatch(r"\[?(.+?)\]?:(\d+)", value)
    if m:
        candidates.append(m.group(1))
    for c in candidates:
        if c in inv.hosts:
            return inv.hosts[c]
        for h in inv.hosts.values():
            if h.address == c:
                return h
    return None


def fill(r: Route, inv: Inventory, alert: Alert, host: Host | None) -> dict[str, Any]:
    """The route's runbook parameters for ``alert``: placeholders filled, the policy's mode
    and confirm added, each value converted to its declared type (``runner.coerce``)."""
    values = {
        "host": host.name if host else "",
        "address": host.address if host else "",
        "alertname": alert.name,
        "fingerprint": alert.fingerprint,
        "starts_at": iso(alert.starts_at),
        "ends_at": iso(alert.ends_at) if alert.ends_at else "",
        "inventory": str(inv.path),
    }
    declared, modes = _declared(r.runbook)
    out: dict[str, Any] = {}
    for k, template in r.parameters.items():
        if k not in declared or k in runner.RUNNER_PARAMS:
            known = ", ".join(p for p in declared if p not in runner.RUNNER_PARAMS)
            raise RoutesError(
                f"unknown parameter {k!r} for runbook {r.runbook}; its parameters are: {known}"
            )
        out[k] = _substitute(template, values, alert)
    if "inventory" in declared and "inventory" not in out:
        out["inventory"] = str(inv.path)
    if "mode" not in out:
        if "incident" not in modes:
            raise RoutesError(
                f"runbook {r.runbook} has no incident mode; set parameters.mode to one of "
                f"{', '.join(m for m in modes if m not in REFUSED_MODES)}"
            )
        out["mode"] = "incident"
    if "confirm" in declared:
        out["confirm"] = r.effective == "autopilot"
    typed = {k: runner.coerce(declared[k], v) for k, v in out.items()}
    if typed["mode"] not in modes:
        raise RoutesError(
            f"parameter 'mode' expects one of {', '.join(modes)}, got {typed['mode']!r}"
        )
    return typed


def sample_alert(r: Route) -> Alert:
    """An alert the route matches, carrying every label and annotation its parameters name."""
    names = r.alertname.names() or ("SampleAlert",)
    used = [ph for v in r.parameters.values() for ph in _placeholders(v)]
    labels = {k: "sample" for k in r.labels}
    labels.update({ph.split(".", 1)[1]: "sample" for ph in used if ph.startswith("labels.")})
    notes = {ph.split(".", 1)[1]: "sample" for ph in used if ph.startswith("annotations.")}
    return Alert(
        "firing",
        {**labels, "alertname": names[0]},
        notes,
        datetime.now(UTC),
        None,
        "0123456789abcdef",
        "http://sample",
    )


def sample_host(inv: Inventory, r: Route) -> Host:
    group = inv.groups.get(r.host_group or "all") or tuple(inv.hosts)
    return inv.hosts[group[0]]


# ------------------------------------------------------------------ helpers
def _route(
    p: Path, inv: Inventory, i: int, raw: Any, defaults: Mapping[str, Any], allow: tuple[str, ...]
) -> Route:
    if not isinstance(raw, dict):
        raise RoutesError(f"{p}: routes[{i}] is a {type(raw).__name__}, expected a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RoutesError(f"{p}: routes[{i}] has no name")
    where = f"{p}: route {name}"
    _no_unknown(p, f"route {name}", raw, ROUTE_KEYS)
    runbook = raw.get("runbook")
    if not isinstance(runbook, str):
        raise RoutesError(f"{where}: runbook is missing; one of {', '.join(runner.runbooks())}")
    try:
        runbook = runner.runbook_path(runbook).stem
    except FaultbookError as exc:
        raise RoutesError(f"{where}: {exc}") from None
    policy = raw.get("policy")
    if policy not in POLICIES:
        raise RoutesError(f"{where}: policy {policy!r} is not one of {', '.join(POLICIES)}")
    match = _mapping(p, f"route {name}: match", raw.get("match"))
    _no_unknown(p, f"route {name}: match", match, MATCH_KEYS)
    if "alertname" not in match:
        raise RoutesError(f"{where}: match has no alertname")
    group = match.get("host_group")
    if group is not None and group not in inv.groups:
        raise RoutesError(
            f"{where}: host_group {group!r} is not a group of {inv.path}; groups: "
            f"{', '.join(sorted(inv.groups))}"
        )
    labels = _mapping(p, f"route {name}: match.labels", match.get("labels") or {})
    host_labels = raw.get("host_label", "instance")
    host_labels = [host_labels] if isinstance(host_labels, str) else host_labels
    if not host_labels or not all(isinstance(h, str) and h for h in host_labels):
        raise RoutesError(f"{where}: host_label must be a label name or a list of them")
    params = _mapping(p, f"route {name}: parameters", raw.get("parameters") or {})
    for k in ("confirm",):
        if k in params:
            raise RoutesError(f"{where}: parameters.{k} is set by the policy ({policy}); remove it")
    if params.get("mode") in REFUSED_MODES:
        raise RoutesError(
            f"{where}: mode {params['mode']!r}: an alert never starts a drill "
            "or a planned operation"
        )
    if params.get("drill") is True:
        raise RoutesError(f"{where}: drill: an alert never starts a drill")
    for k, v in params.items():
        for ph in _placeholders(v):
            if ph not in PLACEHOLDERS and not ph.startswith(("labels.", "annotations.")):
                raise RoutesError(
                    f"{where}: parameters.{k}: unknown placeholder {{{ph}}}; expected one of "
                    + ", ".join(
                        f"{{{x}}}" for x in (*PLACEHOLDERS, "labels.NAME", "annotations.NAME")
                    )
                )
    fencing = raw.get("fencing", False)
    if not isinstance(fencing, bool):
        raise RoutesError(f"{where}: fencing must be true or false")
    effective, fallback = policy, ""
    if policy == "autopilot" and name not in allow:
        effective = "prepare"
        fallback = f"route {name} is not in autopilot_allow of {p.name}: prepared instead"
    elif policy == "autopilot" and fencing and not fencing_confirmed(inv):
        effective = "prepare"
        fallback = (
            f"fencing cannot be confirmed: inventory {inv.name} names no db_fence_playbook "
            "in its vars: prepared instead"
        )
    settings = {k: raw.get(k, defaults[k]) for k in ("window", "max_runs", "lock", "lock_wait")}
    max_runs = settings["max_runs"]
    if not isinstance(max_runs, int) or isinstance(max_runs, bool) or max_runs < 1:
        raise RoutesError(f"{where}: max_runs must be an integer >= 1, got {max_runs!r}")
    if settings["lock"] not in LOCK_POLICIES:
        raise RoutesError(
            f"{where}: lock {settings['lock']!r} is not one of {', '.join(LOCK_POLICIES)}"
        )
    return Route(
        name=name,
        runbook=runbook,
        policy=policy,
        effective=effective,
        fallback=fallback,
        alertname=_matcher(where, "match.alertname", match["alertname"], allow_list=True),
        labels={str(k): _matcher(where, f"match.labels.{k}", v) for k, v in labels.items()},
        host_group=group,
        host_labels=tuple(host_labels),
        parameters=dict(params),
        window_s=duration(where, "window", settings["window"], minimum=0.0),
        max_runs=max_runs,
        lock=settings["lock"],
        lock_wait_s=duration(where, "lock_wait", settings["lock_wait"], minimum=0.0),
        fencing=fencing,
        settle_s=duration(where, "settle", raw.get("settle", 0), minimum=0.0),
    )


def _matcher(where: str, key: str, v: Any, allow_list: bool = False) -> Matcher:
    if isinstance(v, str) and v:
        return Matcher(exact=(v,))
    if allow_list and isinstance(v, list) and v and all(isinstance(x, str) and x for x in v):
        return Matcher(exact=tuple(v))
    if isinstance(v, dict) and set(v) == {"regex"} and isinstance(v["regex"], str):
        try:
            return Matcher(regex=re.compile(v["regex"]))
        except re.error as exc:
            raise RoutesError(f"{where}: {key}: bad regex {v['regex']!r}: {exc}") from None
    expected = (
        "a value, a list of values or {regex: ...}" if allow_list else "a value or {regex: ...}"
    )
    raise RoutesError(f"{where}: {key} is {v!r}, expected {expected}")


def duration(where: str, key: str, v: Any, minimum: float = 0.0) -> float:
    """Seconds from a number or a string such as ``90s``, ``10m``, ``1h30m``."""
    secs: float | None = None
    if isinstance(v, int | float) and not isinstance(v, bool):
        secs = float(v)
    elif isinstance(v, str) and v.strip():
        m = _DURATION.fullmatch(v.strip())
        if m and any(m.groups()):
            h, mi, s = (float(x) if x else 0.0 for x in m.groups())
            secs = h * 3600 + mi * 60 + s
    if secs is None or secs != secs or secs == float("inf") or secs < minimum:
        raise RoutesError(
            f"{where}: {key} is {v!r}, expected seconds >= {minimum:g} or a duration like 10m"
        )
    return secs


def _unrouted(p: Path, raw: Any) -> dict[str, str]:
    if not isinstance(raw, list):
        raise RoutesError(f"{p}: unrouted must be a list of {{alert: NAME, reason: WHY}}")
    out: dict[str, str] = {}
    for i, u in enumerate(raw):
        if not isinstance(u, dict) or set(u) != {"alert", "reason"}:
            raise RoutesError(f"{p}: unrouted[{i}] must be {{alert: NAME, reason: WHY}}")
        if not isinstance(u["alert"], str) or not u["alert"]:
            raise RoutesError(f"{p}: unrouted[{i}] names no alert")
        if not isinstance(u["reason"], str) or not u["reason"].strip():
            raise RoutesError(f"{p}: unrouted {u['alert']}: give a reason")
        out[u["alert"]] = u["reason"].strip()
    return out


def _mapping(p: Path, what: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise RoutesError(f"{p}: {what} is {type(v).__name__}, expected a mapping")
    return v


def _no_unknown(p: Path, what: str, d: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = [k for k in d if k not in known]
    if extra:
        raise RoutesError(f"{p}: {what}: unknown key {extra[0]!r}; expected {', '.join(known)}")


def _placeholders(v: Any) -> list[str]:
    if isinstance(v, str):
        return _PLACEHOLDER.findall(v)
    if isinstance(v, list):
        return [ph for x in v for ph in _placeholders(x)]
    return []


def _uses(v: Any, names: tuple[str, ...]) -> bool:
    return any(ph in names for ph in _placeholders(v))


def _substitute(template: Any, values: Mapping[str, str], alert: Alert) -> Any:
    if isinstance(template, list):
        return [_substitute(x, values, alert) for x in template]
    if not isinstance(template, str):
        return template

    def one(m: re.Match[str]) -> str:
        ph = m.group(1)
        if ph.startswith("labels."):
            return _required(alert.labels, ph.removeprefix("labels."), "label")
        if ph.startswith("annotations."):
            return _required(alert.annotations, ph.removeprefix("annotations."), "annotation")
        return values[ph]

    return _PLACEHOLDER.sub(one, template)


def _required(d: Mapping[str, str], key: str, what: str) -> str:
    if key not in d:
        raise RoutesError(f"the alert has no {what} {key!r}")
    return d[key]


_DECLARED: dict[str, tuple[dict[str, runner.Param], tuple[str, ...]]] = {}


def _declared(runbook: str) -> tuple[dict[str, runner.Param], tuple[str, ...]]:
    """A runbook's declared parameters and modes, read once per process (papermill's
    inspect is too slow to repeat per alert on the event loop)."""
    if runbook not in _DECLARED:
        _DECLARED[runbook] = (runner.parameters(runbook), runner.modes(runbook))
    return _DECLARED[runbook]
