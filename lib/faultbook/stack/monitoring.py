"""Prometheus' HTTP API into pandas: instant and range queries, alerts, waiting for either.

Every function takes the target as an ``Inventory`` (Prometheus runs on every
host of group ``mon``, port 9090, HTTPS with basic auth: the inventory's CA and
the vault's ``vault_monitoring_faultbook_password``, through
``http.monitoring_session``) or as a base URL string such as
``"http://127.0.0.1:9090"`` (tests, tunnels; no credentials are sent there).

Frames
    ``query``        one row per series: the label columns (sorted, ``__name__``
                     first when present), ``value`` (float) and ``timestamp``.
    ``query_range``  long format: ``timestamp``, ``value`` and the label
                     columns, one row per sample, series after series.
    ``alerts``       ``alertname``, ``state``, ``severity``, ``instance``,
                     ``active_at``, ``summary`` and ``labels`` (a dict of all
                     labels).

Timestamps are ``datetime64[ns, UTC]``. A label a series does not carry is
"" (Prometheus treats a missing label and an empty one alike).

Failures raise ``PrometheusError`` with the expression in a one-line message;
its ``transient`` flag says whether asking again may help. The wait functions
poll through transient failures and give up at their deadline with
``AlertTimeout`` / ``ConditionTimeout`` (both ``DrillAborted``).

This module imports only ``errors`` and ``inventory``; ``stack`` delegates to it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd
import requests

from faultbook.errors import AlertTimeout, FaultbookError, ParameterError, PrometheusError
from faultbook.inventory import Inventory
from faultbook.poll import poll
from faultbook.stack import http

log = logging.getLogger(__name__)

TS_DTYPE = "datetime64[ns, UTC]"
ALERT_COLUMNS = ("alertname", "state", "severity", "instance", "active_at", "summary", "labels")
MAX_ERROR_CHARS = 300


PROMETHEUS_PORT = 9090
# A powered-off mon host answers nothing (no ARP reply, no reset): without a short
# connect timeout every query would wait out the whole timeout before trying the next.
CONNECT_TIMEOUT_S = 1.0
# Per inventory, the Prometheus that answered last: asked first next time.
_answered: dict[str, str] = {}


def _url(address: str) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{PROMETHEUS_PORT}"


def prometheus_urls(inv: Inventory) -> list[str]:
    """Every mon host's Prometheus, the one that answered last first.

    Each mon host runs the same scrape config and rules, so any of them will do.
    """
    urls = [_url(h.address) for h in inv.group("mon")]
    if not urls:
        raise PrometheusError(f"{inv.path} has no host in group mon: no Prometheus to ask")
    last = _answered.get(str(inv.path))
    return sorted(urls, key=lambda u: u != last)


def prometheus_url(inv: Inventory) -> str:
    """The Prometheus asked first: the one that answered last, else the first mon host."""
    return prometheus_urls(inv)[0]


def answered_by(inv: Inventory) -> str | None:
    """The mon host whose Prometheus answered the last query for ``inv`` (None: none yet)."""
    url = _answered.get(str(inv.path))
    if url is None:
        return None
    return next((h.name for h in inv.group("mon") if url == _url(h.address)), url)


def _one_line(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= MAX_ERROR_CHARS else s[: MAX_ERROR_CHARS - 1] + "…"


def _unix(ts: datetime, name: str) -> float:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ParameterError(f"{name}={ts!r} is naive: expected a timezone-aware (UTC) datetime")
    return ts.timestamp()


def api(
    target: Inventory | str,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout: float = 5.0,
    expr: str | None = None,
    host: str | None = None,
) -> Any:
    """GET ``path`` of Prometheus' API and return the ``data`` member of a successful answer.

    With an inventory, each mon host's Prometheus is asked in turn (the one that
    answered last first) until one answers; ``answered_by`` says which did. A
    mon host that is down costs at most ``CONNECT_TIMEOUT_S``. ``host`` (a mon
    host's name) asks that one only.

    Raises PrometheusError naming ``expr`` (or the path) when no Prometheus can be
    reached, one answers with something other than JSON, or reports ``status: error``
    (401: the vault's password is not the one the mon hosts were provisioned with).
    """
    if isinstance(target, str):
        with http.session() as s:
            return _api_one(s, target.rstrip("/"), path, params, timeout=timeout, expr=expr)
    if host is not None:
        h = target.host(host)
        if "mon" not in h.groups:
            raise ParameterError(f"{host} is not in group mon: it runs no Prometheus")
        with http.monitoring_session(target) as s:
            return _api_one(s, _url(h.address), path, params, timeout=timeout, expr=expr)
    failures: list[PrometheusError] = []
    with http.monitoring_session(target) as s:
        for base in prometheus_urls(target):
            try:
                data = _api_one(s, base, path, params, timeout=timeout, expr=expr)
            except PrometheusError as exc:
                if not exc.transient:
                    raise
                failures.append(exc)
                continue
            if failures:
                log.warning("%s; %s answered instead", failures[-1], base)
            _answered[str(target.path)] = base
            return data
    if len(failures) == 1:
        raise failures[0]
    raise PrometheusError(
        "no Prometheus answers: " + "; ".join(str(f) for f in failures), expr=expr, transient=True
    )


def _api_one(
    s: requests.Session,
    base: str,
    path: str,
    params: Mapping[str, Any] | None,
    *,
    timeout: float,
    expr: str | None,
) -> Any:
    url = base + path
    what = f"Prometheus query {expr!r}" if expr is not None else f"Prometheus {path}"
    try:
        r = s.get(
            url, params=dict(params or {}), timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout)
        )
    except requests.Timeout:
        raise PrometheusError(
            f"{what}: no answer from {url} within {timeout:g} s", expr=expr, transient=True
        ) from None
    except requests.RequestException as exc:
        raise PrometheusError(
            f"{what}: cannot reach {url}: {type(exc).__name__}: {_one_line(exc)}",
            expr=expr,
            transient=True,
        ) from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code == 401:
        raise PrometheusError(
            f"{what}: HTTP 401 from {url}: the credentials were refused (an inventory's "
            f"{http.MONITORING_PASSWORD_VAR} must be the one its mon hosts were provisioned with)",
            expr=expr,
            transient=False,
        )
    if not isinstance(body, dict):
        raise PrometheusError(
            f"{what}: HTTP {r.status_code} from {url} with a non-JSON body: {_one_line(r.text)}",
            expr=expr,
            transient=r.status_code >= 500,
        )
    if body.get("status") != "success" or r.status_code >= 400:
        kind = body.get("errorType") or f"HTTP {r.status_code}"
        raise PrometheusError(
            f"{what} failed: {kind}: {_one_line(body.get('error', 'no error message'))}",
            expr=expr,
            transient=r.status_code >= 500,
        )
    for w in body.get("warnings") or ():
        log.warning("%s: Prometheus warns: %s", what, _one_line(w))
    return body.get("data")


def raw_query(target: Inventory | str, expr: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The ``result`` list of an instant query, as Prometheus sends it."""
    data = api(target, "/api/v1/query", {"query": expr}, timeout=timeout, expr=expr)
    return list(data["result"])


def raw_alerts(target: Inventory | str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every alert (pending and firing), as Prometheus sends it."""
    data = api(target, "/api/v1/alerts", timeout=timeout)
    return list(data["alerts"])


def _timestamps(values: list[float]) -> pd.Series:
    return pd.Series(pd.to_datetime(values, unit="s", utc=True), dtype=TS_DTYPE)


def _label_order(labels: set[str]) -> list[str]:
    return sorted(labels, key=lambda k: (k != "__name__", k))


def _samples_frame(series: list[dict[str, Any]], value_first: bool) -> pd.DataFrame:
    """One row per (series, sample) from ``[{"metric": {...}, "values": [[t, "v"], ...]}]``."""
    labels = _label_order({k for s in series for k in s.get("metric", {})})
    rows: list[dict[str, Any]] = []
    for s in series:
        metric = s.get("metric", {})
        samples = s["values"] if "values" in s else [s["value"]] if "value" in s else []
        for t, v in samples:
            row = {k: metric.get(k, "") for k in labels}
            row["timestamp"] = float(t)
            row["value"] = float(v)
            rows.append(row)
    cols = ["value", "timestamp"] if value_first else ["timestamp", "value"]
    order = labels + cols if value_first else cols + labels
    df = pd.DataFrame(rows, columns=order)
    df["value"] = df["value"].astype("float64")
    df["timestamp"] = _timestamps(list(df["timestamp"]))
    for k in labels:
        df[k] = df[k].astype(str)
    return df.reset_index(drop=True)


def _result_frame(data: Mapping[str, Any], value_first: bool) -> pd.DataFrame:
    kind = data.get("resultType")
    result = data.get("result")
    if kind in ("scalar", "string"):
        t, v = result  # type: ignore[misc]
        try:
            value = float(v)
        except ValueError:
            value = math.nan
        return _samples_frame([{"metric": {}, "value": [t, value]}], value_first)
    return _samples_frame(list(result or []), value_first)


def query(
    target: Inventory | str, expr: str, at: datetime | None = None, timeout: float = 5.0
) -> pd.DataFrame:
    """Evaluate ``expr`` at ``at`` (default: now): one row per series, labels + value + timestamp.

    A scalar result is one row without labels; a range-vector selector
    (``up[1m]``) gives one row per sample.
    """
    params: dict[str, Any] = {"query": expr}
    if at is not None:
        params["time"] = _unix(at, "at")
    data = api(target, "/api/v1/query", params, timeout=timeout, expr=expr)
    return _result_frame(data, value_first=True)


def query_range(
    target: Inventory | str,
    expr: str,
    start: datetime,
    end: datetime,
    step_s: float = 1.0,
    timeout: float = 10.0,
) -> pd.DataFrame:
    """Evaluate ``expr`` from ``start`` to ``end`` every ``step_s``: timestamp, value, labels."""
    t0, t1 = _unix(start, "start"), _unix(end, "end")
    if t1 < t0:
        raise ParameterError(f"end={end.isoformat()} is before start={start.isoformat()}")
    if not step_s > 0:
        raise ParameterError(f"step_s={step_s!r} is invalid: expected a number of seconds > 0")
    params = {"query": expr, "start": t0, "end": t1, "step": step_s}
    data = api(target, "/api/v1/query_range", params, timeout=timeout, expr=expr)
    return _result_frame(data, value_first=False)


def _alerts_frame(raw: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for a in raw:
        labels = dict(a.get("labels") or {})
        annotations = a.get("annotations") or {}
        rows.append(
            {
                "alertname": str(labels.get("alertname", "")),
                "state": str(a.get("state", "")),
                "severity": str(labels.get("severity", "")),
                "instance": str(labels.get("instance", "")),
                "active_at": a.get("activeAt"),
                "summary": str(annotations.get("summary", "")),
                "labels": labels,
            }
        )
    df = pd.DataFrame(rows, columns=list(ALERT_COLUMNS))
    # Prometheus sends RFC 3339 with nanoseconds; "0001-01-01T00:00:00Z" (never
    # active) is out of range for nanoseconds and becomes NaT.
    df["active_at"] = pd.Series(
        pd.to_datetime(df["active_at"], utc=True, format="ISO8601", errors="coerce"),
        dtype=TS_DTYPE,
    )
    for col in ("alertname", "state", "severity", "instance", "summary"):
        df[col] = df[col].astype(str)
    df["labels"] = df["labels"].astype(object)
    return df.sort_values(["active_at", "alertname"], kind="stable").reset_index(drop=True)


def alerts(
    target: Inventory | str, state: str | None = "firing", timeout: float = 5.0
) -> pd.DataFrame:
    """Alerts in ``state`` ("firing", "pending"; None: all), oldest first."""
    raw = raw_alerts(target, timeout=timeout)
    if state is not None:
        raw = [a for a in raw if a.get("state") == state]
    return _alerts_frame(raw)


def _matches(labels: Mapping[str, Any], match: Mapping[str, str] | None) -> bool:
    return all(str(labels.get(k, "")) == str(v) for k, v in (match or {}).items())


def _transient(exc: FaultbookError) -> bool:
    """Prometheus errors worth asking again (no answer, a 5xx), not a bad expression."""
    return isinstance(exc, PrometheusError) and exc.transient


def wait_for_alert(
    target: Inventory | str,
    name: str,
    timeout_s: float,
    poll_s: float = 0.5,
    match: Mapping[str, str] | None = None,
) -> pd.Series:
    """Poll until alert ``name`` fires (with labels equal to ``match``); return its row.

    The row is the oldest matching firing alert (see ``alerts``). Raises
    AlertTimeout naming the alert when none fires within ``timeout_s``.
    """

    def attempt(request_timeout: float) -> pd.Series | None:
        df = alerts(target, state="firing", timeout=request_timeout)
        for _, row in df.iterrows():
            if row["alertname"] == name and _matches(row["labels"], match):
                return row
        return None

    where = f" with {dict(match)}" if match else ""
    row = poll(
        attempt,
        timeout_s,
        what=f"alert {name}{where} firing",
        interval_s=poll_s,
        transient=_transient,
        error=AlertTimeout,
    )
    log.info("alert %s firing (active since %s)", name, row["active_at"])
    return row


def wait_until(
    target: Inventory | str,
    expr: str,
    predicate: Callable[[pd.DataFrame], bool],
    timeout_s: float,
    poll_s: float = 0.5,
) -> pd.DataFrame:
    """Poll ``query(expr)`` until ``predicate(frame)`` is true; return that frame.

    Raises ConditionTimeout naming the expression (and what it last returned)
    when the predicate is still false after ``timeout_s``.
    """
    last: list[pd.DataFrame] = []

    def attempt(request_timeout: float) -> pd.DataFrame | None:
        df = query(target, expr, timeout=request_timeout)
        last[:] = [df]
        return df if predicate(df) else None

    return poll(
        attempt,
        timeout_s,
        what=f"condition on {expr!r}",
        interval_s=poll_s,
        transient=_transient,
        seen=lambda: _one_line(_describe(last[0])) if last else "",
    )


def _describe(df: pd.DataFrame) -> str:
    if df.empty:
        return "no series"
    labels = [c for c in df.columns if c not in ("value", "timestamp")]
    parts = []
    for _, row in df.head(5).iterrows():
        name = ",".join(f"{k}={row[k]}" for k in labels if row[k] != "")
        parts.append(f"{{{name}}} {row['value']:g}")
    more = f" (+{len(df) - 5} more)" if len(df) > 5 else ""
    return "; ".join(parts) + more


def firing_alerts(target: Inventory | str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Raw firing alerts, pending ones left out (see ``alerts`` for a DataFrame)."""
    return [a for a in raw_alerts(target, timeout=timeout) if a.get("state") == "firing"]


ALERTMANAGER_PORT = 9093  # the monitoring role's monitoring_alertmanager_port


def alertmanager_alerts(
    inv: Inventory, labels: Mapping[str, str], timeout: float = 3.0
) -> list[dict[str, Any]]:
    """The alerts Alertmanager holds that carry every one of ``labels`` (``/api/v2/alerts``
    with an equality filter per label), each with its ``status.state``: ``active``, or
    ``suppressed`` by an inhibition or a silence. Each mon host is asked in turn until
    one answers (the cluster shares its alerts); PrometheusError when none does."""
    params = [("filter", f'{k}="{_escape(v)}"') for k, v in sorted(labels.items())]
    failures: list[str] = []
    with http.monitoring_session(inv) as s:
        for h in inv.group("mon"):
            host = f"[{h.address}]" if ":" in h.address else h.address
            url = f"https://{host}:{ALERTMANAGER_PORT}/api/v2/alerts"
            try:
                r = s.get(url, params=params, timeout=(min(CONNECT_TIMEOUT_S, timeout), timeout))
                body = r.json() if r.status_code == 200 else None
            except (requests.RequestException, ValueError) as exc:
                failures.append(f"{h.name}: {type(exc).__name__}: {_one_line(exc)}")
                continue
            if not isinstance(body, list):
                failures.append(f"{h.name}: HTTP {r.status_code}: {_one_line(r.text)}")
                continue
            return [a for a in body if isinstance(a, dict)]
    raise PrometheusError(
        "no Alertmanager answers: " + ("; ".join(failures) or "the inventory has no mon host"),
        transient=True,
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def alert_still_acts(inv: Inventory, labels: Mapping[str, str]) -> bool:
    """Whether an alert with these labels is still active in Alertmanager: firing and
    neither inhibited nor silenced. False when it is resolved or suppressed (a symptom
    that a wider alert now inhibits, e.g. one server down once its whole backend is)."""
    found = alertmanager_alerts(inv, labels)
    return any((a.get("status") or {}).get("state") == "active" for a in found)
