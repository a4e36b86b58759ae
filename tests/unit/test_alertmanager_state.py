"""Whether an alert still calls for action after a route's settle: Alertmanager's view.

Prometheus knows nothing of inhibitions, so a web server marked down a moment before
its whole backend still fires there; Alertmanager holds it ``suppressed``. The
answers below follow Alertmanager's ``/api/v2/alerts``; the session is faked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from faultbook import inventory
from faultbook.alerts import dispatch
from faultbook.alerts.payload import Alert
from faultbook.errors import PrometheusError
from faultbook.stack import http, monitoring


class Answer:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code, self._body, self.text = status, body, str(body)

    def json(self) -> Any:
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


class Session:
    """Answers per mon host address; an exception is raised as the request's."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers, self.asked = answers, []

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get(self, url: str, params: Any = None, timeout: Any = None) -> Answer:
        self.asked.append((url, params))
        host = url.split("//")[1].split(":")[0]
        got = self.answers[host]
        if isinstance(got, Exception):
            raise got
        return got


def am(*states: str, name: str = "HAProxyServerDown") -> list[dict[str, Any]]:
    return [
        {"labels": {"alertname": name, "server": "web1"}, "status": {"state": s}} for s in states
    ]


@pytest.fixture
def lab() -> inventory.Inventory:
    return inventory.load("lab")


def use(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> Session:
    s = Session(answers)
    monkeypatch.setattr(http, "monitoring_session", lambda inv: s)
    return s


def test_an_active_alert_still_acts(monkeypatch: pytest.MonkeyPatch, lab: Any) -> None:
    s = use(monkeypatch, {"10.77.0.51": Answer(200, am("active"))})
    assert monitoring.alert_still_acts(lab, {"alertname": "HAProxyServerDown", "server": "web1"})
    url, params = s.asked[0]
    assert url == "https://10.77.0.51:9093/api/v2/alerts"
    assert params == [("filter", 'alertname="HAProxyServerDown"'), ("filter", 'server="web1"')]


def test_an_inhibited_or_resolved_alert_does_not(monkeypatch: pytest.MonkeyPatch, lab: Any) -> None:
    use(monkeypatch, {"10.77.0.51": Answer(200, am("suppressed"))})
    assert not monitoring.alert_still_acts(lab, {"alertname": "HAProxyServerDown"})
    use(monkeypatch, {"10.77.0.51": Answer(200, [])})
    assert not monitoring.alert_still_acts(lab, {"alertname": "HAProxyServerDown"})


def test_the_other_mon_host_answers_when_one_is_down(
    monkeypatch: pytest.MonkeyPatch, lab: Any
) -> None:
    s = use(
        monkeypatch,
        {
            "10.77.0.51": requests.ConnectionError("refused"),
            "10.77.0.52": Answer(200, am("suppressed", "active")),
        },
    )
    assert monitoring.alert_still_acts(lab, {"alertname": "HAProxyServerDown"})
    assert [u.split("//")[1].split(":")[0] for u, _ in s.asked] == ["10.77.0.51", "10.77.0.52"]


def test_no_alertmanager_answering_is_an_error(monkeypatch: pytest.MonkeyPatch, lab: Any) -> None:
    use(
        monkeypatch,
        {"10.77.0.51": Answer(401, {"error": "unauthorized"}), "10.77.0.52": Answer(503, "x")},
    )
    with pytest.raises(PrometheusError, match=r"no Alertmanager answers: mon1: HTTP 401.*mon2"):
        monitoring.alertmanager_alerts(lab, {"alertname": "X"})


def test_a_label_value_with_a_quote_is_escaped(monkeypatch: pytest.MonkeyPatch, lab: Any) -> None:
    s = use(monkeypatch, {"10.77.0.51": Answer(200, [])})
    monitoring.alertmanager_alerts(lab, {"summary": 'a "b" \\c'})
    assert s.asked[0][1] == [("filter", 'summary="a \\"b\\" \\\\c"')]


def test_settle_asks_prometheus_when_no_alertmanager_answers(
    monkeypatch: pytest.MonkeyPatch, lab: Any
) -> None:
    def none(inv: Any, labels: Any, timeout: float = 3.0) -> list[dict[str, Any]]:
        raise PrometheusError("no Alertmanager answers: mon1: down; mon2: down", transient=True)

    monkeypatch.setattr(monitoring, "alertmanager_alerts", none)
    firing = [{"labels": {"alertname": "HAProxyServerDown", "server": "web1", "x": "y"}}]
    monkeypatch.setattr(monitoring, "firing_alerts", lambda inv: firing)
    check = dispatch.still_acting(lab)
    labels = {"alertname": "HAProxyServerDown", "server": "web1"}
    alert = Alert("firing", labels, {}, datetime.now(UTC), None, "f1")
    assert check(alert)
    monkeypatch.setattr(monitoring, "firing_alerts", lambda inv: [])
    assert not check(alert)
