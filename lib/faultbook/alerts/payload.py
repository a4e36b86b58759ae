"""Alertmanager's webhook payload (version 4): parsed, checked against its JSON Schema.

The schema ships in the package (``faultbook/schema/alertmanager-webhook.v4.schema.json``)
and is checked with ``jsonschema``, as result.json is. :func:`parse` turns a request
body into a :class:`Notification` or raises ``AlertPayloadError`` with one line naming
the field, and the HTTP status the receiver answers: 400 for a body that is not JSON,
422 for a wrong ``version`` or a schema violation.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

from faultbook.errors import AlertPayloadError
from faultbook.results import _problem

VERSION = "4"
SCHEMA_RESOURCE = ("faultbook.schema", "alertmanager-webhook.v4.schema.json")
# Alertmanager's "no end yet" for a firing alert (Go's zero time).
ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Alert:
    """One alert of a notification."""

    status: str  # firing | resolved
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None  # None: still firing (Alertmanager sends the zero time)
    fingerprint: str
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    @property
    def firing(self) -> bool:
        return self.status == "firing"


@dataclass(frozen=True)
class Notification:
    """One webhook POST: an alert group and its alerts."""

    version: str
    group_key: str
    status: str
    receiver: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    alerts: tuple[Alert, ...]
    truncated_alerts: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@functools.cache
def schema() -> dict[str, Any]:
    package, name = SCHEMA_RESOURCE
    doc: dict[str, Any] = json.loads(resources.files(package).joinpath(name).read_text("utf-8"))
    return doc


@functools.cache
def _validator() -> Validator:
    doc = schema()
    cls = validator_for(doc)
    cls.check_schema(doc)
    return cls(doc)


def problems(doc: Any) -> list[str]:
    """The ways ``doc`` departs from the version-4 schema, one line each naming the field."""
    errors = sorted(
        _validator().iter_errors(doc), key=lambda e: ([str(p) for p in e.path], e.message)
    )
    return list(dict.fromkeys(_problem(e) for e in errors))


def parse(body: bytes | str) -> Notification:
    """A webhook body as a Notification; ``AlertPayloadError`` (one line) when it is not one."""
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise AlertPayloadError(f"body is not UTF-8 JSON: {exc.reason}", 400) from None
    except json.JSONDecodeError as exc:
        raise AlertPayloadError(
            f"body is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", 400
        ) from None
    return from_dict(doc)


def from_dict(doc: Any) -> Notification:
    """A decoded payload as a Notification (the version first, then the whole schema)."""
    if not isinstance(doc, dict):
        raise AlertPayloadError(
            f"payload is a JSON {type(doc).__name__}, expected an object (Alertmanager's "
            f"webhook payload version {VERSION})"
        )
    if doc.get("version") != VERSION:
        raise AlertPayloadError(
            f"version is {doc.get('version')!r}, expected {VERSION!r} (Alertmanager's webhook "
            "payload version 4)"
        )
    found = problems(doc)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise AlertPayloadError(found[0] + more)
    alerts = []
    for i, a in enumerate(doc["alerts"]):
        ends = _time(a["endsAt"], f"alerts[{i}].endsAt")
        alerts.append(
            Alert(
                status=a["status"],
                labels=dict(a["labels"]),
                annotations=dict(a["annotations"]),
                starts_at=_time(a["startsAt"], f"alerts[{i}].startsAt"),
                ends_at=None if ends <= ZERO_TIME else ends,
                fingerprint=a["fingerprint"],
                generator_url=str(a.get("generatorURL", "")),
            )
        )
    return Notification(
        version=doc["version"],
        group_key=doc["groupKey"],
        status=doc["status"],
        receiver=doc["receiver"],
        group_labels=dict(doc["groupLabels"]),
        common_labels=dict(doc["commonLabels"]),
        common_annotations=dict(doc["commonAnnotations"]),
        external_url=doc["externalURL"],
        alerts=tuple(alerts),
        truncated_alerts=int(doc.get("truncatedAlerts", 0)),
        raw=doc,
    )


def _time(text: str, where: str) -> datetime:
    """RFC 3339 as Alertmanager writes it (nanoseconds, Z or an offset), in UTC."""
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AlertPayloadError(f"{where} {text!r} is not an RFC 3339 timestamp") from None
    if ts.tzinfo is None:  # the schema's pattern requires a zone; be sure anyway
        raise AlertPayloadError(f"{where} {text!r} has no time zone")
    return ts.astimezone(UTC)


def iso(ts: datetime) -> str:
    """A timestamp as faultbook writes them (ISO 8601 UTC, seconds, Z)."""
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
