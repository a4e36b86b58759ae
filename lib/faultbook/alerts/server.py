"""The alert receiver's HTTP service (aiohttp): Alertmanager's webhook in, decisions out.

``POST /`` takes a webhook. In order: the bearer token (the vault's
``vault_alert_webhook_token``; none → 401, wrong → 403, compared in constant time),
the body (over 1 MiB → 413, aiohttp's ``client_max_size``), JSON (else 400), the
payload version and schema (else 422). Each refusal is recorded in the decision log
with its reason and runs nothing. An accepted body is saved under
state_dir(inv)/alerts/payloads/ and handed to the ``Dispatcher``; the answer is 200
with the decisions. ``GET /-/healthy`` answers 200 without authentication.

Runs are child processes the dispatcher watches; the event loop never waits on one.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from faultbook import decisions, secrets
from faultbook.alerts import payload
from faultbook.alerts.dispatch import Dispatcher, alerts_dir, save_payload
from faultbook.errors import AlertPayloadError, ConfigError
from faultbook.inventory import Inventory

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # 1 MiB: an Alertmanager group is far smaller
TOKEN_VAR = "vault_alert_webhook_token"  # noqa: S105 - the name of a vault variable
DEFAULT_PORT = 9095
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher", Dispatcher)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
STARTED: web.AppKey[str] = web.AppKey("started", str)


def listen_address(inv: Inventory) -> tuple[str, int]:
    """Where the receiver listens: ``alert_receiver_listen`` (host:port) if the inventory
    sets it, else ``controller_ip`` and ``alert_receiver_port`` (default 9095)."""
    given = inv.vars.get("alert_receiver_listen")
    if given:
        return parse_listen(str(given), f"{inv.path}: alert_receiver_listen")
    ip = inv.vars.get("controller_ip")
    if not ip:
        raise ConfigError(
            f"{inv.path}: no controller_ip (or alert_receiver_listen: HOST:PORT) in its vars; "
            "the alert receiver needs an address to listen on"
        )
    return str(ip), _port(
        inv.vars.get("alert_receiver_port", DEFAULT_PORT), f"{inv.path}: alert_receiver_port"
    )


def parse_listen(text: str, what: str = "--listen") -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ConfigError(f"{what} {text!r}: expected HOST:PORT, e.g. 10.77.0.1:9095")
    return host, _port(port, what)


def _port(v: Any, what: str) -> int:
    try:
        port = int(v)
    except (TypeError, ValueError):
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(f"{what} {v!r}: expected a TCP port 1-65535")
    return port


def token(inv: Inventory) -> str:
    """The webhook's bearer token from the inventory's vault (ConfigError when missing)."""
    value = secrets.read_vault(inv).get(TOKEN_VAR)
    if not isinstance(value, str) or not value.strip():
        where = (
            "the lab's vault (`faultbook lab up` creates it)"
            if inv.is_lab
            else f"the vault of inventory {inv.name} (group_vars/all/vault.yml, "
            "FAULTBOOK_VAULT_PASSWORD_FILE)"
        )
        raise ConfigError(
            f"{TOKEN_VAR} is missing from {where}; the receiver needs it "
            "to authenticate Alertmanager"
        )
    return value.strip()


def _refuse(request: web.Request, status: int, reason: str) -> web.Response:
    """Record a refused notification (and its decision) and answer with STATUS."""
    inv = request.app[DISPATCHER].inv
    fields: dict[str, Any] = {
        "inventory": inv.name,
        "remote": request.remote,
        "http_status": status,
    }
    decisions.record("notification", accepted=False, reason=reason, **fields)
    decisions.record("decision", decision="refused", reason=reason, **fields)
    log.warning("refused a webhook from %s: %s %s", request.remote, status, reason)
    headers = {"WWW-Authenticate": 'Bearer realm="faultbook"'} if status == 401 else None
    return web.json_response({"error": reason}, status=status, headers=headers)


def _authorized(request: web.Request) -> tuple[int, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not given.strip():
        return 401, "no bearer token (Authorization: Bearer …)"
    expected = request.app[TOKEN].encode()
    if not hmac.compare_digest(given.strip().encode(), expected):
        return 403, "wrong bearer token"
    return None


async def webhook(request: web.Request) -> web.Response:
    denied = _authorized(request)
    if denied is not None:
        return _refuse(request, *denied)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _refuse(request, 413, f"body over {MAX_BODY} bytes")
    try:
        n = payload.parse(body)
    except AlertPayloadError as exc:
        return _refuse(request, exc.http_status, str(exc))
    dispatcher = request.app[DISPATCHER]
    path = save_payload(dispatcher.inv, body)
    found = await dispatcher.handle(n, path)
    return web.json_response({"payload_file": str(path), "decisions": [d.fields() for d in found]})


async def healthy(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "since": request.app[STARTED]})


def app(dispatcher: Dispatcher, token_: str) -> web.Application:
    """The receiver as an aiohttp application (tests drive it with aiohttp's test client)."""
    a = web.Application(client_max_size=MAX_BODY)
    a[DISPATCHER] = dispatcher
    a[TOKEN] = token_
    a[STARTED] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    a.router.add_post("/", webhook)
    a.router.add_get("/-/healthy", healthy)
    return a


@dataclass(frozen=True)
class Files:
    """The receiver's pid file, state file and log (state_dir(inv)/alerts/)."""

    pid: Path
    state: Path
    log: Path

    @classmethod
    def of(cls, inv: Inventory) -> Files:
        d = alerts_dir(inv)
        return cls(d / "receiver.pid", d / "receiver.json", d / "receiver.log")


async def _serve(
    dispatcher: Dispatcher, token_: str, host: str, port: int, state: Mapping[str, Any]
) -> None:
    runner = web.AppRunner(app(dispatcher, token_), access_log=log)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    files = Files.of(dispatcher.inv)
    files.pid.write_text(f"{os.getpid()}\n")
    files.state.write_text(json.dumps(dict(state), indent=2) + "\n")
    log.warning(
        "alert receiver listening on http://%s:%d/ (inventory %s, routes %s)",
        host,
        port,
        dispatcher.inv.name,
        dispatcher.routes.path,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    try:
        await stop.wait()
    finally:
        in_flight = sorted(dispatcher.guard.in_flight.values())
        log.warning(
            "alert receiver stopping; runs in flight go on by themselves: %s",
            ", ".join(in_flight) or "none",
        )
        await runner.cleanup()
        if _pid_in(files.pid) == os.getpid():  # not a newer receiver's files
            files.pid.unlink(missing_ok=True)
            files.state.unlink(missing_ok=True)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def serve(
    inv: Inventory,
    routes_file: str | Path | None = None,
    listen: str | None = None,
) -> None:
    """``faultbook alerts serve``: validate the routes, read the token, serve until SIGTERM."""
    from faultbook.alerts import routes

    table = routes.load(inv, routes_file)  # RoutesError (exit 2): the receiver does not start
    import papermill  # noqa: F401 - imported now, not on the first `prepare` (seconds)

    host, port = parse_listen(listen) if listen else listen_address(inv)
    secret = token(inv)
    state = {
        "pid": os.getpid(),
        "since": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "listen": f"{host}:{port}",
        "inventory": str(inv.path),
        "routes": str(table.path),
    }

    async def main() -> None:
        await _serve(Dispatcher(inv, table), secret, host, port, state)

    asyncio.run(main())
