"""Unit tests for faultbook.monitoring against a fake Prometheus on 127.0.0.1.

The canned answers follow the Prometheus HTTP API (v1) formats.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from faultbook.errors import (
    AlertTimeout,
    ConditionTimeout,
    DrillAborted,
    FaultbookError,
    ParameterError,
    PrometheusError,
)
from faultbook.inventory import Host, Inventory
from faultbook.stack import monitoring

T0 = 1714564800.0  # 2024-05-01T12:00:00Z
Answer = tuple[int, Any]


def ok(data: dict[str, Any]) -> Answer:
    return 200, {"status": "success", "data": data}


VECTOR = ok(
    {
        "resultType": "vector",
        "result": [
            {"metric": {"__name__": "up", "instance": "db1", "job": "node"}, "value": [T0, "1"]},
            {
                "metric": {"__name__": "up", "instance": "db2", "job": "postgres"},
                "value": [T0 + 0.5, "0"],
            },
            {"metric": {"__name__": "up", "job": "prometheus"}, "value": [T0, "NaN"]},
        ],
    }
)
MATRIX = ok(
    {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"instance": "lb1", "server": "app1"},
                "values": [[T0, "1"], [T0 + 1, "1"], [T0 + 2, "0"]],
            },
            {"metric": {"instance": "lb1", "server": "app2"}, "values": [[T0 + 1, "+Inf"]]},
        ],
    }
)
ALERTS = ok(
    {
        "alerts": [
            {
                "labels": {
                    "alertname": "HostDown",
                    "instance": "db1",
                    "job": "node",
                    "severity": "critical",
                },
                "annotations": {"summary": "db1 is down: node_exporter does not answer"},
                "state": "firing",
                "activeAt": "2024-05-01T12:00:03.123456789Z",
                "value": "0e+00",
            },
            {
                "labels": {"alertname": "HostDown", "instance": "app1", "severity": "critical"},
                "annotations": {"summary": "app1 is down"},
                "state": "firing",
                "activeAt": "2024-05-01T14:00:01+02:00",
                "value": "0e+00",
            },
            {
                "labels": {"alertname": "DiskFilling", "instance": "db2"},
                "annotations": {},
                "state": "pending",
                "activeAt": "2024-05-01T12:00:05Z",
                "value": "5e-02",
            },
        ]
    }
)
BAD_QUERY = (
    400,
    {
        "status": "error",
        "errorType": "bad_data",
        "error": 'invalid parameter "query": 1:4: parse error:\nunexpected <EOF>',
    },
)


class FakePrometheus:
    """Serves ``routes[path](params) -> (status, body)``; logs (path, params)."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict[str, str]], Answer]] = {}
        self.calls: list[tuple[str, dict[str, str]]] = []
        # When set, basic auth is required as the web config does: else 401.
        self.users: dict[str, str] | None = None
        self.auth_seen: list[str | None] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.calls.append((url.path, params))
                auth = self.headers.get("Authorization")
                fake.auth_seen.append(auth)
                route = fake.routes.get(url.path)
                status, body = route(params) if route else (404, "404 page not found")
                if fake.users is not None and auth not in {
                    "Basic " + base64.b64encode(f"{u}:{p}".encode()).decode()
                    for u, p in fake.users.items()
                }:
                    status, body = 401, "Unauthorized\n"
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    yield fake
    fake.close()


PASSWORD = "monitoring-password-0123456789abcdef"


def write_vault(
    inv: Inventory, monkeypatch: pytest.MonkeyPatch, values: dict[str, str] | None = None
) -> None:
    from vault_fixtures import write_vault as write

    write(inv, monkeypatch, values or {"vault_monitoring_faultbook_password": PASSWORD})


def inventory(tmp_path: Path) -> Inventory:
    return Inventory(
        path=tmp_path / "hosts.yml",
        hosts={"mon1": Host("mon1", "192.0.2.40", ("mon",))},
        groups={"mon": ("mon1",)},
        vars={},
    )


def test_prometheus_url(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    assert monitoring.prometheus_url(inv) == "https://192.0.2.40:9090"
    assert monitoring.prometheus_urls(inv) == ["https://192.0.2.40:9090"]
    assert monitoring.answered_by(inv) is None


def two_mon(tmp_path: Path) -> Inventory:
    return Inventory(
        path=tmp_path / "two" / "hosts.yml",
        hosts={
            "mon1": Host("mon1", "127.0.0.1", ("mon",)),
            "mon2": Host("mon2", "127.0.0.2", ("mon",)),
        },
        groups={"mon": ("mon1", "mon2")},
        vars={},
    )


def test_any_mon_host_answers_and_the_one_that_did_is_asked_first(
    prom: FakePrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mon1 refuses (nothing listens on its port); mon2's Prometheus answers."""
    prom.users = {"faultbook": PASSWORD}
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}"
    dead.close()
    inv = two_mon(tmp_path)
    write_vault(inv, monkeypatch)
    urls = {"mon1": dead_url, "mon2": prom.url}
    monkeypatch.setattr(
        monitoring,
        "prometheus_urls",
        lambda i: sorted(urls.values(), key=lambda u: u != monitoring._answered.get(str(i.path))),
    )
    prom.routes["/api/v1/query"] = lambda p: VECTOR
    assert not monitoring.query(inv, "up").empty
    assert monitoring._answered[str(inv.path)] == prom.url
    assert monitoring.prometheus_urls(inv)[0] == prom.url  # asked first from now on
    prom.close()
    with pytest.raises(PrometheusError, match="no Prometheus answers") as err:
        monitoring.query(inv, "up", timeout=0.5)
    assert err.value.transient


def test_answered_by_names_the_mon_host(tmp_path: Path) -> None:
    inv = two_mon(tmp_path)
    monitoring._answered[str(inv.path)] = "https://127.0.0.2:9090"
    assert monitoring.answered_by(inv) == "mon2"
    assert monitoring.prometheus_urls(inv) == ["https://127.0.0.2:9090", "https://127.0.0.1:9090"]


def test_query_vector(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/query"] = lambda p: VECTOR
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    df = monitoring.query(prom.url, "up", at=at)
    assert prom.calls == [("/api/v1/query", {"query": "up", "time": str(T0)})]
    assert list(df.columns) == ["__name__", "instance", "job", "value", "timestamp"]
    assert list(df["instance"]) == ["db1", "db2", ""]
    assert list(df["job"]) == ["node", "postgres", "prometheus"]
    assert df["value"].iloc[0] == 1.0 and df["value"].iloc[1] == 0.0
    assert math.isnan(df["value"].iloc[2])
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert df["timestamp"].iloc[1] == pd.Timestamp("2024-05-01T12:00:00.5Z")


def test_query_empty_and_scalar(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/query"] = lambda p: (
        ok({"resultType": "scalar", "result": [T0, "42"]})
        if p["query"] == "scalar(1)"
        else ok({"resultType": "vector", "result": []})
    )
    empty = monitoring.query(prom.url, "up == 2")
    assert empty.empty and list(empty.columns) == ["value", "timestamp"]
    assert str(empty["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert "time" not in prom.calls[0][1]
    scalar = monitoring.query(prom.url, "scalar(1)")
    assert scalar["value"].tolist() == [42.0]
    assert scalar["timestamp"].tolist() == [pd.Timestamp(T0, unit="s", tz="UTC")]


def test_query_range_long_format(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/query_range"] = lambda p: MATRIX
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    df = monitoring.query_range(prom.url, "haproxy_server_up", start, start + timedelta(seconds=2))
    path, params = prom.calls[0]
    assert path == "/api/v1/query_range"
    assert params == {
        "query": "haproxy_server_up",
        "start": str(T0),
        "end": str(T0 + 2),
        "step": "1.0",
    }
    assert list(df.columns) == ["timestamp", "value", "instance", "server"]
    assert list(df["server"]) == ["app1", "app1", "app1", "app2"]
    assert list(df["value"]) == [1.0, 1.0, 0.0, math.inf]
    assert list(df["timestamp"]) == [pd.Timestamp(T0 + s, unit="s", tz="UTC") for s in (0, 1, 2, 1)]
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_query_range_checks_its_arguments(prom: FakePrometheus) -> None:
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(ParameterError, match="before start"):
        monitoring.query_range(prom.url, "up", start, start - timedelta(seconds=1))
    with pytest.raises(ParameterError, match="step_s=0"):
        monitoring.query_range(prom.url, "up", start, start, step_s=0)
    with pytest.raises(ParameterError, match="naive"):
        monitoring.query(prom.url, "up", at=datetime(2024, 5, 1, 12, 0))
    assert prom.calls == []


def test_bad_promql_is_a_prometheus_error(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/query"] = lambda p: BAD_QUERY
    with pytest.raises(PrometheusError) as err:
        monitoring.query(prom.url, "sum(")
    msg = str(err.value)
    assert "'sum('" in msg and "bad_data" in msg and "unexpected <EOF>" in msg
    assert "\n" not in msg
    assert err.value.expr == "sum(" and not err.value.transient
    assert isinstance(err.value, FaultbookError)


def test_http_failures_are_prometheus_errors(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/query"] = lambda p: (503, "Service Unavailable")
    with pytest.raises(PrometheusError, match=r"'up'.*HTTP 503") as err:
        monitoring.query(prom.url, "up")
    assert err.value.transient
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PrometheusError, match=r"'up'.*cannot reach") as err:
        monitoring.query(f"http://127.0.0.1:{port}", "up", timeout=1)
    assert err.value.transient


def test_alerts(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/alerts"] = lambda p: ALERTS
    df = monitoring.alerts(prom.url)
    assert list(df.columns) == list(monitoring.ALERT_COLUMNS)
    assert list(df["instance"]) == ["app1", "db1"]  # oldest first
    assert set(df["state"]) == {"firing"}
    assert list(df["severity"]) == ["critical", "critical"]
    assert str(df["active_at"].dtype) == "datetime64[ns, UTC]"
    assert df["active_at"].tolist() == [
        pd.Timestamp("2024-05-01T12:00:01Z"),
        pd.Timestamp("2024-05-01T12:00:03.123456789Z"),
    ]
    assert df["summary"].iloc[1] == "db1 is down: node_exporter does not answer"
    assert df["labels"].iloc[1]["job"] == "node"
    every = monitoring.alerts(prom.url, state=None)
    assert len(every) == 3
    pending = monitoring.alerts(prom.url, state="pending")
    assert pending["alertname"].tolist() == ["DiskFilling"]
    assert pending["summary"].tolist() == [""] and pending["severity"].tolist() == [""]


def test_wait_for_alert(prom: FakePrometheus) -> None:
    polls = {"n": 0}

    def answer(p: dict[str, str]) -> Answer:
        polls["n"] += 1
        return ALERTS if polls["n"] >= 3 else ok({"alerts": []})

    prom.routes["/api/v1/alerts"] = answer
    row = monitoring.wait_for_alert(
        prom.url, "HostDown", timeout_s=5, poll_s=0.01, match={"instance": "db1"}
    )
    assert polls["n"] == 3
    assert row["instance"] == "db1" and row["alertname"] == "HostDown"
    assert row["active_at"] == pd.Timestamp("2024-05-01T12:00:03.123456789Z")


def test_wait_for_alert_times_out(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/alerts"] = lambda p: ALERTS
    with pytest.raises(AlertTimeout) as err:
        monitoring.wait_for_alert(prom.url, "DiskFilling", timeout_s=0.2, poll_s=0.05)
    assert "DiskFilling" in str(err.value) and "0.2 s" in str(err.value)
    assert isinstance(err.value, DrillAborted)
    assert 3 <= len(prom.calls) <= 6
    with pytest.raises(AlertTimeout, match=r"HostDown with \{'instance': 'lb9'\}"):
        monitoring.wait_for_alert(prom.url, "HostDown", 0.05, 0.01, match={"instance": "lb9"})


def test_wait_until_retries_through_transient_errors(prom: FakePrometheus) -> None:
    answers = iter(
        [
            (503, "starting"),
            ok({"resultType": "vector", "result": []}),
            ok({"resultType": "vector", "result": [{"metric": {}, "value": [T0, "3"]}]}),
        ]
    )
    prom.routes["/api/v1/query"] = lambda p: next(answers)
    df = monitoring.wait_until(
        prom.url, "count(up)", lambda d: not d.empty and d["value"].iloc[0] >= 3, 5, 0.01
    )
    assert df["value"].tolist() == [3.0]
    assert len(prom.calls) == 3


def test_wait_until_times_out_with_last_result(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/query"] = lambda p: VECTOR
    with pytest.raises(ConditionTimeout) as err:
        monitoring.wait_until(prom.url, "up", lambda d: bool((d["value"] == 5).all()), 0.1, 0.02)
    msg = str(err.value)
    assert "'up'" in msg and "0.1 s" in msg and "instance=db1" in msg


def test_wait_until_stops_at_once_on_bad_promql(prom: FakePrometheus) -> None:
    prom.routes["/api/v1/query"] = lambda p: BAD_QUERY
    with pytest.raises(PrometheusError, match="bad_data"):
        monitoring.wait_until(prom.url, "sum(", lambda d: True, timeout_s=5, poll_s=0.01)
    assert len(prom.calls) == 1


def test_stack_helpers_delegate(
    prom: FakePrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "prometheus_urls", lambda inv: [prom.url])
    prom.users = {"faultbook": PASSWORD}
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    monkeypatch.setenv("HTTP_PROXY", "http://192.0.2.1:3128")
    prom.routes["/api/v1/query"] = lambda p: VECTOR if p["query"] == "up" else BAD_QUERY
    prom.routes["/api/v1/alerts"] = lambda p: ALERTS
    inv = inventory(tmp_path)
    write_vault(inv, monkeypatch)
    raw = monitoring.raw_query(inv, "up")
    assert raw == VECTOR[1]["data"]["result"]
    firing = monitoring.firing_alerts(inv)
    assert [a["labels"]["instance"] for a in firing] == ["db1", "app1"]
    with pytest.raises(FaultbookError, match="bad_data"):
        monitoring.raw_query(inv, "sum(")
    assert len(monitoring.query(inv, "up")) == 3


# ------------------------------------------------------ credentials (web config)
def test_an_inventory_target_sends_the_vaults_basic_auth_and_a_url_target_none(
    prom: FakePrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "prometheus_urls", lambda inv: [prom.url])
    prom.routes["/api/v1/query"] = lambda p: VECTOR
    inv = inventory(tmp_path)
    write_vault(inv, monkeypatch)
    assert len(monitoring.query(inv, "up")) == 3
    expected = "Basic " + base64.b64encode(f"faultbook:{PASSWORD}".encode()).decode()
    assert prom.auth_seen[-1] == expected
    monitoring.query(prom.url, "up")
    assert prom.auth_seen[-1] is None


def test_a_refused_password_is_a_one_line_error_without_it(
    prom: FakePrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "prometheus_urls", lambda inv: [prom.url])
    prom.routes["/api/v1/query"] = lambda p: VECTOR
    prom.users = {"faultbook": "another-password"}
    inv = inventory(tmp_path)
    write_vault(inv, monkeypatch)
    with pytest.raises(PrometheusError) as err:
        monitoring.query(inv, "up")
    msg = str(err.value)
    assert "HTTP 401" in msg and "vault_monitoring_faultbook_password" in msg
    assert PASSWORD not in msg and "\n" not in msg
    assert not err.value.transient  # asking the next mon host would not help


def test_no_password_in_the_vault_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faultbook.errors import ConfigError

    inv = inventory(tmp_path)
    write_vault(inv, monkeypatch, {"vault_other": "x"})
    with pytest.raises(ConfigError, match="vault_monitoring_faultbook_password is missing"):
        monitoring.query(inv, "up")


def test_one_mon_host_is_asked_by_name(
    prom: FakePrometheus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = two_mon(tmp_path)
    write_vault(inv, monkeypatch)
    port = int(prom.url.rsplit(":", 1)[1])
    monkeypatch.setattr(monitoring, "PROMETHEUS_PORT", port)
    monkeypatch.setattr(monitoring, "_url", lambda address: f"http://{address}:{port}")
    prom.routes["/api/v1/rules"] = lambda p: ok({"groups": []})
    assert monitoring.api(inv, "/api/v1/rules", host="mon1") == {"groups": []}
    with pytest.raises(PrometheusError, match="cannot reach"):
        monitoring.api(inv, "/api/v1/rules", host="mon2", timeout=0.5)  # 127.0.0.2: nothing
    with pytest.raises(ParameterError, match="not in group mon"):
        two = Inventory(
            path=inv.path,
            hosts={**inv.hosts, "web1": Host("web1", "127.0.0.3", ("web",))},
            groups={**inv.groups, "web": ("web1",)},
            vars={},
        )
        monitoring.api(two, "/api/v1/rules", host="web1")
