"""Alertmanager's webhook payload (version 4): parsed, or refused naming the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from alerts_fixtures import alert, notification
from jsonschema.validators import validator_for

from faultbook.alerts import payload
from faultbook.errors import AlertPayloadError, UsageError


def _parse(doc: object) -> payload.Notification:
    return payload.parse(json.dumps(doc).encode())


def _refused(doc: object) -> AlertPayloadError:
    with pytest.raises(AlertPayloadError) as err:
        _parse(doc)
    assert "\n" not in str(err.value)
    return err.value


def test_a_firing_and_a_resolved_alert_parse() -> None:
    doc = notification(
        alert("HostDown", {"instance": "web1"}),
        alert("HostDown", {"instance": "web2"}, status="resolved", fingerprint="ffee"),
    )
    n = _parse(doc)
    assert (n.version, n.status, n.receiver, n.external_url) == (
        "4",
        "firing",
        "faultbook-webhook",
        "http://mon1:9093",
    )
    assert n.group_labels == {"alertname": "HostDown"} and n.truncated_alerts == 0
    first, second = n.alerts
    assert first.name == "HostDown" and first.firing and first.labels["instance"] == "web1"
    # Alertmanager writes nanoseconds; a firing alert's endsAt is Go's zero time.
    assert first.starts_at == datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert first.ends_at is None
    assert not second.firing and second.ends_at == datetime(2026, 12, 1, 10, 5, tzinfo=UTC)
    assert second.fingerprint == "ffee"


def test_a_timestamp_with_an_offset_is_read_as_utc() -> None:
    doc = notification(alert("HostDown", starts_at="2026-12-01T12:00:00+02:00"))
    assert _parse(doc).alerts[0].starts_at == datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_unknown_keys_are_allowed_within_version_4() -> None:
    doc = notification(alert("HostDown"))
    doc["futureField"] = 1
    doc["alerts"][0]["futureField"] = "x"
    assert _parse(doc).alerts[0].name == "HostDown"


def test_malformed_json_is_a_400_naming_where() -> None:
    with pytest.raises(AlertPayloadError) as err:
        payload.parse(b'{"version": "4",')
    assert err.value.http_status == 400 and "not valid JSON at line 1" in str(err.value)
    assert isinstance(err.value, UsageError)  # exit 2 from the CLI
    with pytest.raises(AlertPayloadError) as err:
        payload.parse(b"\xff\xfe{}")
    assert err.value.http_status == 400


def test_a_wrong_version_is_a_422_naming_it() -> None:
    doc = notification(alert("HostDown"))
    doc["version"] = "3"
    e = _refused(doc)
    assert e.http_status == 422 and "version is '3', expected '4'" in str(e)
    del doc["version"]
    assert "version is None" in str(_refused(doc))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("alerts"), "'alerts'"),
        (lambda d: d.update(alerts=[]), "alerts"),
        (lambda d: d.update(status="pending"), "status 'pending'"),
        (lambda d: d["alerts"][0].update(status="ok"), "alerts[0].status 'ok'"),
        (lambda d: d["alerts"][0]["labels"].pop("alertname"), "alerts[0].labels lacks 'alertname'"),
        (lambda d: d["alerts"][0]["labels"].update(instance=3), "alerts[0].labels.instance"),
        (lambda d: d["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt"),
        (lambda d: d["alerts"][0].update(fingerprint="NOT HEX"), "alerts[0].fingerprint"),
        (lambda d: d["alerts"][0].pop("fingerprint"), "alerts[0] lacks 'fingerprint'"),
        (lambda d: d.update(truncatedAlerts=-1), "truncatedAlerts"),
        (lambda d: d.update(groupLabels=[]), "groupLabels has type array"),
    ],
)
def test_a_schema_violation_is_a_422_naming_the_field(change, field: str) -> None:  # type: ignore[no-untyped-def]
    doc = notification(alert("HostDown", {"instance": "web1"}))
    change(doc)
    e = _refused(doc)
    assert e.http_status == 422
    assert str(e).startswith(field) or field in str(e), str(e)


def test_a_json_array_is_refused() -> None:
    e = _refused([notification(alert("HostDown"))])
    assert e.http_status == 422 and "expected an object" in str(e)


def test_the_shipped_schema_is_valid_draft_2020_12() -> None:
    doc = payload.schema()
    cls = validator_for(doc)
    cls.check_schema(doc)
    assert doc["$schema"].endswith("2020-12/schema")
    assert doc["properties"]["version"] == {"const": "4"}
