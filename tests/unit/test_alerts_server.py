"""The receiver over HTTP (aiohttp's test client, and a real one on 127.0.0.1): bad input
gets a 4xx and runs nothing; alerts become ran, duplicate, throttled, locked, no route,
refused, resolved and prepared decisions, each in the decision log."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.test_utils import TestClient, TestServer
from alerts_fixtures import alert, body, fake_command
from click.testing import CliRunner

from faultbook import decisions, inventory, lock, secrets
from faultbook.alerts import dispatch, routes, server, service
from faultbook.cli import main
from faultbook.errors import ConfigError, RoutesError

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("FAULTBOOK_HOME", str(h))
    monkeypatch.delenv("FAKE_RUN_EXIT", raising=False)
    return h


@pytest.fixture(scope="module")
def lab() -> inventory.Inventory:
    return inventory.load("lab")


@pytest.fixture(scope="module")
def table(lab: inventory.Inventory) -> routes.Routes:
    """The lab's routes acting at once (settling is tested in test_alerts_settle.py)."""
    from dataclasses import replace

    t = routes.load(lab)
    return replace(t, routes=tuple(replace(r, settle_s=0.0) for r in t.routes))


def _decisions() -> list[dict[str, Any]]:
    return list(decisions.entries(event="decision"))


def _runs(home: Path) -> list[Path]:
    d = home / "lab" / "alerts" / "runs"
    return sorted(d.iterdir()) if d.exists() else []


def _serve(
    lab: inventory.Inventory,
    table: routes.Routes,
    tmp: Path,
    script: Callable[[TestClient, dispatch.Dispatcher], Any],
) -> Any:
    async def go() -> Any:
        d = dispatch.Dispatcher(lab, table, command=fake_command(tmp))
        async with TestClient(TestServer(server.app(d, TOKEN))) as client:
            out = await script(client, d)
            await d.drain(30)
            return out

    return asyncio.run(go())


async def _post(client: TestClient, data: bytes, headers: dict | None = None) -> tuple[int, Any]:
    r = await client.post("/", data=data, headers=AUTH if headers is None else headers)
    return r.status, await r.json()


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("data", "headers", "status", "reason"),
    [
        (body(alert("NoWritablePrimary")), {}, 401, "no bearer token"),
        (body(alert("NoWritablePrimary")), {"Authorization": "Basic eDp5"}, 401, "no bearer"),
        (body(alert("NoWritablePrimary")), {"Authorization": "Bearer nope"}, 403, "wrong bearer"),
        (b'{"version": "4", "alerts": [', None, 400, "not valid JSON"),
        (
            body(alert("NoWritablePrimary")).replace(b'"version": "4"', b'"version": "3"'),
            None,
            422,
            "version is '3'",
        ),
        (
            body(alert("NoWritablePrimary")).replace(b'"firing"', b'"burning"'),
            None,
            422,
            "status 'burning'",
        ),
        (b"[" + b" " * (1024 * 1024) + b"]", None, 413, "body over 1048576 bytes"),
    ],
)
def test_bad_input_is_a_4xx_logged_and_runs_nothing(
    lab,
    table,
    home: Path,
    tmp_path: Path,
    data: bytes,
    headers,
    status: int,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    async def script(client: TestClient, d: dispatch.Dispatcher) -> tuple[int, Any, dict]:
        code, doc = await _post(client, data, headers)
        r = await client.post("/", data=data, headers=headers if headers is not None else AUTH)
        return code, doc, dict(r.headers)

    code, doc, hdrs = _serve(lab, table, tmp_path, script)
    assert code == status and reason in doc["error"]
    if status == 401:
        assert hdrs["WWW-Authenticate"].startswith("Bearer")
    notes = list(decisions.entries(event="notification"))
    assert notes and all(not n["accepted"] and n["http_status"] == status for n in notes)
    assert [e["decision"] for e in _decisions()] == ["refused", "refused"]
    assert reason in _decisions()[0]["reason"]
    assert _runs(home) == [] and not (home / "incidents").exists()
    assert not (home / "lab" / "alerts" / "payloads").exists()


def test_health_answers_without_auth(lab, table, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def script(client: TestClient, d: dispatch.Dispatcher) -> int:
        return (await client.get("/-/healthy")).status

    assert _serve(lab, table, tmp_path, script) == 200


# ------------------------------------------------------------------ decisions
def test_an_autopilot_alert_runs_once_and_its_repeats_are_duplicates(
    lab,
    table,
    home: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    data = body(alert("NoWritablePrimary", {"job": "postgres"}))

    async def script(client: TestClient, d: dispatch.Dispatcher) -> list:
        first = await _post(client, data)
        again = await _post(client, data)  # Alertmanager's repeat, or the other Prometheus
        await d.drain(30)
        later = await _post(client, data)  # finished, but within the window
        return [first, again, later]

    (c1, d1), (c2, d2), (c3, d3) = _serve(lab, table, tmp_path, script)
    assert (c1, c2, c3) == (200, 200, 200)
    assert [x["decisions"][0]["decision"] for x in (d1, d2, d3)] == [
        "ran",
        "duplicate",
        "duplicate",
    ]
    assert "in flight" in d2["decisions"][0]["reason"]
    assert "within the route's window" in d3["decisions"][0]["reason"]
    [run] = _runs(home)
    argv = json.loads((run / "argv.json").read_text())
    assert argv["params"] == {"inventory": str(lab.path), "mode": "incident", "confirm": "true"}
    assert argv["argv"][0] == "db-failover" and argv["argv"][-2:] == ["--lock-wait", "120"]
    assert argv["trigger"] == "alert:a1b2c3d4e5f60718"
    saved = Path(d1["payload_file"])
    assert saved.parent == home / "lab" / "alerts" / "payloads" and saved.read_bytes() == data
    [ran] = [e for e in _decisions() if e["decision"] == "ran"]
    assert ran["route"] == "lost-primary" and ran["policy"] == "autopilot"
    assert ran["runbook"] == "db-failover" and ran["run_dir"] == str(run)
    assert ran["payload_file"] == str(saved)
    [fin] = decisions.entries(event="run-finished")
    assert (fin["exit_status"], fin["verdict"], fin["page"]) == (0, "pass", False)


def test_a_flapping_alert_name_is_throttled(lab, table, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def script(client: TestClient, d: dispatch.Dispatcher) -> list:
        a = await _post(client, body(alert("HostDown", {"instance": "web1"}, fingerprint="01")))
        b = await _post(client, body(alert("HostDown", {"instance": "web2"}, fingerprint="02")))
        return [a[1]["decisions"][0], b[1]["decisions"][0]]

    first, second = _serve(lab, table, tmp_path, script)
    assert (first["decision"], first["parameters"]["target"]) == ("ran", "web1")
    assert second["decision"] == "throttled" and "at most 1" in second["reason"]
    assert len(_runs(home)) == 1


def test_resolved_no_route_and_an_unknown_host(lab, table, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = body(
        alert("NoWritablePrimary", status="resolved", fingerprint="0a"),
        alert("NobodyRoutesThis", fingerprint="0b"),
        alert("HostDown", {"instance": "ghost7"}, fingerprint="0c"),
    )

    async def script(client: TestClient, d: dispatch.Dispatcher) -> Any:
        return await _post(client, data)

    code, doc = _serve(lab, table, tmp_path, script)
    assert code == 200
    got = [(x["decision"], x["fingerprint"]) for x in doc["decisions"]]
    assert got == [("resolved", "0a"), ("no route", "0b"), ("refused", "0c")]
    assert (
        "'ghost7' (label instance) is not a host of inventory lab" in doc["decisions"][2]["reason"]
    )
    assert [e["decision"] for e in _decisions()] == ["resolved", "no route", "refused"]
    assert _runs(home) == []


def test_a_busy_inventory_skips_or_waits_by_route(
    lab,
    home: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    p = tmp_path / "routes.yml"
    p.write_text(
        textwrap.dedent("""
        routes:
          - {name: skipper, match: {alertname: A}, runbook: health-check, policy: diagnose,
             lock: skip}
          - {name: waiter, match: {alertname: B}, runbook: health-check, policy: diagnose,
             lock: wait, lock_wait: 1s}
        """)
    )
    t = routes.load(lab, p)

    async def script(client: TestClient, d: dispatch.Dispatcher) -> list:
        with lock.hold(lock.key(str(lab.path)), "run db-failover", trigger="alert:ff"):
            a = await _post(client, body(alert("A", fingerprint="0a")))
            b = await _post(client, body(alert("B", fingerprint="0b")))
            await d.drain(30)  # the waiting run gives up after 1 s
        return [a[1]["decisions"][0], b[1]["decisions"][0]]

    skipped, waited = _serve(lab, t, tmp_path, script)
    assert skipped["decision"] == "locked" and "run db-failover (pid" in skipped["reason"]
    assert waited["decision"] == "diagnosed"
    later = [e for e in _decisions() if e["decision"] == "locked"]
    assert len(later) == 2 and "stayed busy" in later[1]["reason"]
    [fin] = decisions.entries(event="run-finished")
    assert fin["exit_status"] == 75 and fin["route"] == "waiter"
    assert len(_runs(home)) == 1  # the skipped one never started


def test_prepare_writes_a_prefilled_notebook(lab, table, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def script(client: TestClient, d: dispatch.Dispatcher) -> Any:
        return await _post(client, body(alert("HostDown", {"instance": "db2"}, fingerprint="d2")))

    code, doc = _serve(lab, table, tmp_path, script)
    [dec] = doc["decisions"]
    assert code == 200 and dec["decision"] == "prepared" and dec["route"] == "db-host-down"
    inc = Path(dec["incident_dir"])
    assert inc.parent == home / "incidents" and inc.name.endswith("Z-db-failover")
    assert f"faultbook notebook --open {inc}" in dec["reason"]
    nb = json.loads((inc / "db-failover.ipynb").read_text())
    injected = [c for c in nb["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    src = "".join(injected[0]["source"])
    assert 'target = "db2"' in src and "confirm = False" in src and 'mode = "incident"' in src
    assert not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert json.loads((inc / "alert.json").read_text())["fingerprint"] == "d2"
    assert _runs(home) == []


def test_a_failed_run_pages_and_prepares(
    lab,
    table,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("FAKE_RUN_EXIT", "1")

    async def script(client: TestClient, d: dispatch.Dispatcher) -> Any:
        return await _post(client, body(alert("HostDown", {"instance": "lb1"}, fingerprint="b1")))

    code, doc = _serve(lab, table, tmp_path, script)
    assert doc["decisions"][0]["decision"] == "ran"
    [fin] = decisions.entries(event="run-finished")
    assert (fin["exit_status"], fin["verdict"], fin["page"]) == (1, "fail", True)
    [prep] = [e for e in _decisions() if e["decision"] == "prepared"]
    assert "the autopilot run of lb-failover failed (exit 1, verdict fail" in prep["reason"]
    assert prep["parameters"]["confirm"] is False and prep["parameters"]["target"] == "lb1"
    assert (Path(prep["incident_dir"]) / "lb-failover.ipynb").is_file()


def test_secret_parameters_are_redacted_in_the_log(lab, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "routes.yml"
    p.write_text(
        textwrap.dedent("""
        routes:
          - {name: r, match: {alertname: A}, runbook: backup-restore, policy: prepare,
             parameters: {mode: verify, passphrase_file: /secret/pass}}
        """)
    )
    t = routes.load(lab, p)

    async def script(client: TestClient, d: dispatch.Dispatcher) -> Any:
        return await _post(client, body(alert("A")))

    _serve(lab, t, tmp_path, script)
    [dec] = _decisions()
    assert dec["parameters"]["passphrase_file"] == "***"
    assert "/secret/pass" not in (home / "decisions.jsonl").read_text()


# ------------------------------------------------------------------ address, token
def test_the_listen_address_comes_from_the_inventory(lab, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert server.listen_address(lab) == ("10.77.0.1", 9095)
    d = tmp_path / "inv"
    d.mkdir()
    (d / "hosts.yml").write_text("all:\n  hosts:\n    h1: {ansible_host: 192.0.2.9}\n")
    with pytest.raises(ConfigError) as err:
        server.listen_address(inventory.load(d))
    assert "no controller_ip" in str(err.value)
    (d / "hosts.yml").write_text(
        "all:\n  vars: {controller_ip: 192.0.2.1, alert_receiver_port: 9999}\n"
        "  hosts:\n    h1: {ansible_host: 192.0.2.9}\n"
    )
    assert server.listen_address(inventory.load(d)) == ("192.0.2.1", 9999)
    (d / "hosts.yml").write_text(
        "all:\n  vars: {controller_ip: 192.0.2.1, alert_receiver_listen: '0.0.0.0:9096'}\n"
        "  hosts:\n    h1: {ansible_host: 192.0.2.9}\n"
    )
    assert server.listen_address(inventory.load(d)) == ("0.0.0.0", 9096)  # noqa: S104
    with pytest.raises(ConfigError):
        server.parse_listen("127.0.0.1:99999")


def test_the_token_comes_from_the_vault(lab, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(secrets, "read_vault", lambda inv: {})
    with pytest.raises(ConfigError) as err:
        server.token(lab)
    assert "vault_alert_webhook_token is missing" in str(err.value)
    monkeypatch.setattr(secrets, "read_vault", lambda inv: {server.TOKEN_VAR: "abc"})
    assert server.token(lab) == "abc"


# ------------------------------------------------------------------ the service
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_start_status_stop_a_real_receiver_on_localhost(lab, home: Path) -> None:  # type: ignore[no-untyped-def]
    secrets.ensure_lab_vault()  # a real (encrypted) lab vault under the tmp FAULTBOOK_HOME
    tok = secrets.read_vault(lab)[server.TOKEN_VAR]
    port = _free_port()
    listen = f"127.0.0.1:{port}"
    st = service.start(lab, listen=listen, timeout_s=60)
    try:
        assert st["up"] and st["healthy"] and st["listen"] == listen and st["since"]
        assert service.start(lab, listen=listen)["pid"] == st["pid"]  # already up: the same
        url = f"http://{listen}/"
        s = requests.Session()
        s.trust_env = False
        data = body(alert("NobodyRoutesThis", fingerprint="99"))
        assert s.post(url, data=data, timeout=10).status_code == 401
        assert (
            s.post(url, data=data, headers={"Authorization": "Bearer x"}, timeout=10).status_code
            == 403
        )
        r = s.post(url, data=data, headers={"Authorization": f"Bearer {tok}"}, timeout=10)
        assert r.status_code == 200 and r.json()["decisions"][0]["decision"] == "no route"
        res = CliRunner().invoke(main, ["alerts", "status", "--json"])
        doc = json.loads(res.output)
        assert doc["up"] and doc["pid"] == st["pid"]
        assert [e["decision"] for e in doc["decisions"]] == ["refused", "refused", "no route"]
        text = CliRunner().invoke(main, ["alerts", "status"]).output
        assert f"alert receiver up (answering): pid {st['pid']}" in text and "no route" in text
    finally:
        assert service.stop(lab) is True
    assert not service.status(lab)["up"] and service.stop(lab) is False
    assert "alert receiver stopping" in (home / "lab" / "alerts" / "receiver.log").read_text()


def test_start_refuses_a_bad_routing_file_before_spawning(lab, home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "routes:\n  - {name: r, match: {alertname: A}, runbook: nope, policy: prepare}\n"
    )
    with pytest.raises(RoutesError) as err:
        service.start(lab, routes_file=bad, listen="127.0.0.1:1")
    assert "route r: unknown runbook 'nope'" in str(err.value)
    assert not (home / "lab" / "alerts" / "receiver.log").exists()
    res = CliRunner().invoke(main, ["alerts", "serve", "--routes", str(bad)])
    assert res.exit_code == 2 and "route r" in res.output and "Traceback" not in res.output


def test_install_unit_writes_a_unit_and_calls_no_systemctl(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "faultbook-alerts.service"
    res = CliRunner().invoke(main, ["alerts", "install-unit", "--path", str(path)])
    assert res.exit_code == 0, res.output
    unit = path.read_text()
    assert (
        "ExecStart=" in unit and "alerts serve -i" in unit and "inventories/lab/hosts.yml" in unit
    )
    assert f"Environment=FAULTBOOK_HOME={home}" in unit
    assert "Restart=on-failure" in unit and "After=network-online.target" in unit
    assert "systemctl enable --now faultbook-alerts.service" in res.output


def test_replay_runs_a_saved_payload_through_the_same_decisions(home: Path, tmp_path: Path) -> None:
    saved = tmp_path / "payload.json"
    saved.write_bytes(body(alert("HostDown", {"instance": "db3"}, fingerprint="d3")))
    first = CliRunner().invoke(main, ["alerts", "replay", str(saved)])
    assert first.exit_code == 0, first.output
    assert "prepared" in first.output
    again = CliRunner().invoke(main, ["alerts", "replay", str(saved)])
    assert "duplicate" in again.output
    forced = CliRunner().invoke(main, ["alerts", "replay", str(saved), "--force"])
    assert "prepared" in forced.output
    assert [e["decision"] for e in _decisions()] == ["prepared", "duplicate", "prepared"]
    assert all(e.get("replay") for e in _decisions())
    assert len(list((home / "incidents").iterdir())) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "3"}')
    res = CliRunner().invoke(main, ["alerts", "replay", str(bad)])
    assert res.exit_code == 2 and "version is '3'" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["alerts", "replay", str(tmp_path / "none.json")])
    assert res.exit_code == 2 and "cannot be read" in res.output


class _FakeLab:
    def __init__(self, inv: inventory.Inventory) -> None:
        self.inv = inv
        self.calls: list[str] = []

    def up(self, timeout: float) -> None:
        self.calls.append("up")

    def down(self, keep_disks: bool) -> None:
        self.calls.append("down")

    def summary(self) -> dict:
        return {"state": "up", "bridge": "fb0", "home": "/x", "hosts": []}


def test_lab_down_stops_the_receiver_first_and_up_without_provision_says_so(
    lab,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    from faultbook.cli import lab as cli_lab

    fake = _FakeLab(lab)
    monkeypatch.setattr(cli_lab, "_lab", lambda: fake)
    monkeypatch.setattr(service, "stop", lambda inv: fake.calls.append("stop") or False)
    res = CliRunner().invoke(main, ["lab", "down"])
    assert res.exit_code == 0 and "lab down" in res.output, res.output
    assert fake.calls == ["stop", "down"]  # the receiver first; not running is no error
    res = CliRunner().invoke(main, ["lab", "up", "--no-provision"])
    assert res.exit_code == 0 and "alert receiver not started (--no-provision)" in res.output
