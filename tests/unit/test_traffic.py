"""Unit tests for faultbook.traffic against a fake ledger on 127.0.0.1 (plain HTTP)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests

from faultbook.drills import traffic
from faultbook.drills.impact import DrillResult
from faultbook.drills.traffic import LoadSpec, Traffic
from faultbook.errors import ParameterError, UsageError
from faultbook.inventory import Host, Inventory

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class FakeLedger:
    """The ledger's HTTP contract in memory. ``mode``: ok | 503 | hang | noid."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mode = "ok"
        self.orders: dict[int, dict[str, Any]] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, key or path, status)
        self.bodies: list[dict[str, Any]] = []
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, Nagle and
                # delayed ACKs add 40 ms to every answer
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up

            def hold(self) -> bool:
                if fake.mode == "hang":
                    fake.release.wait(5)
                    return True
                return False

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                key = self.headers.get("Idempotency-Key", "")
                if self.hold():
                    self.reply(503, {"error": "unavailable"})
                    return
                out: dict[str, Any]
                with fake.lock:
                    fake.bodies.append(body)
                    if set(body) != {"customer", "amount_cents"} or not key:
                        status, out = 422, {"error": "invalid_order"}
                    elif fake.mode == "503":
                        status, out = 503, {"error": "unavailable"}
                    elif fake.mode == "noid":
                        status, out = 201, {"status": "created"}
                    else:
                        oid = len(fake.orders) + 1
                        out = {"id": oid, "idempotency_key": key, **body}
                        out["created_at"] = "2024-05-01T12:00:00.000Z"
                        fake.orders[oid] = out
                        status = 201
                    fake.log.append(("POST", key, status))
                self.reply(status, out)

            def do_GET(self) -> None:
                if self.hold():
                    self.reply(503, {"error": "unavailable"})
                    return
                m = re.fullmatch(r"/orders/(\d+)", self.path)
                with fake.lock:
                    if fake.mode == "503":
                        status, out = 503, {"error": "unavailable"}
                    elif m and int(m.group(1)) in fake.orders:
                        status, out = 200, fake.orders[int(m.group(1))]
                    else:
                        status, out = 404, {"error": "not_found"}
                    fake.log.append(("GET", self.path, status))
                self.reply(status, out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def requests_with(self, method: str, status: int | None = None) -> list[tuple[str, str, int]]:
        with self.lock:
            return [e for e in self.log if e[0] == method and status in (None, e[2])]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ledger() -> Iterator[FakeLedger]:
    fake = FakeLedger()
    yield fake
    fake.close()


def offsets(t: Traffic, df: pd.DataFrame) -> pd.Series:
    assert t.started_at is not None
    return (df["sent_at"] - pd.Timestamp(t.started_at)).dt.total_seconds()


# -- LoadSpec -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rps", 0),
        ("rps", -1.0),
        ("rps", 1000.5),
        ("rps", float("nan")),
        ("duration_s", 0),
        ("duration_s", 3601),
        ("post_ratio", -0.1),
        ("post_ratio", 1.5),
        ("timeout_s", 0),
        ("max_in_flight", 0),
        ("max_in_flight", 2.5),
        ("customer", " "),
    ],
)
def test_loadspec_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ParameterError) as err:
        kwargs: dict[str, Any] = {field: value}
        LoadSpec(**kwargs)
    msg = str(err.value)
    assert f"LoadSpec.{field}={value!r}" in msg
    assert "expected" in msg
    assert "\n" not in msg


def test_loadspec_schedule() -> None:
    spec = LoadSpec(rps=20, duration_s=1.0, post_ratio=0.25)
    assert spec.total_requests == 20
    assert LoadSpec(rps=0.3, duration_s=10).total_requests == 3
    assert LoadSpec(rps=3, duration_s=0.5).total_requests == 2
    kinds = [spec.is_post(i) for i in range(20)]
    assert sum(kinds) == 5
    assert kinds[:4] == [False, False, False, True]
    assert not any(LoadSpec(post_ratio=0).is_post(i) for i in range(50))
    assert all(LoadSpec(post_ratio=1).is_post(i) for i in range(50))


# -- against the fake ledger -------------------------------------------------------


def test_rate_and_records(ledger: FakeLedger) -> None:
    spec = LoadSpec(rps=40, duration_s=1.0, post_ratio=0.5, timeout_s=2)
    t = Traffic(ledger.url, spec).start()
    assert t.running
    t.wait()
    assert not t.running
    df = t.records()

    assert list(df.columns) == list(traffic.COLUMNS)
    assert {c: str(d) for c, d in df.dtypes.items()} == traffic.DTYPES
    assert sorted(df["seq"]) == list(range(40))
    assert df["sent_at"].is_monotonic_increasing
    assert df["ok"].all(), df[~df["ok"]]
    assert (df["error"] == "").all()

    # open loop: request i leaves at i / rps
    lag = offsets(t, df) - df["seq"] / spec.rps
    assert lag.min() > -0.005
    assert lag.max() < 1.0  # generous: CI machines are busy
    span = (df["sent_at"].max() - df["sent_at"].min()).total_seconds()
    assert 0.9 < span < 2.0

    posts, gets = df[df["kind"] == "POST"], df[df["kind"] == "GET"]
    # every other request is a POST; so is any other one sent before the first POST's
    # answer (nothing to GET yet): the first few of them, however busy the machine
    scheduled = [s for s in range(40) if spec.is_post(s)]
    assert len(scheduled) == 20 and set(scheduled) <= set(posts["seq"])
    unscheduled = [s for s in range(40) if not spec.is_post(s)]
    early = sorted(set(posts["seq"]) - set(scheduled))
    assert early == unscheduled[: len(early)]
    assert len(gets) > 0
    assert set(posts["status"]) == {201}
    assert set(gets["status"]) == {200}
    assert t.acked_ids() == set(ledger.orders) == set(posts["order_id"])
    assert set(gets["order_id"]) <= t.acked_ids()
    assert (gets["idempotency_key"] == "").all()
    keys = list(posts["idempotency_key"])
    assert len(set(keys)) == len(keys) and all(UUID4.fullmatch(k) for k in keys)
    assert sorted(keys) == sorted(k for _, k, _ in ledger.requests_with("POST"))
    assert all(set(b) == {"customer", "amount_cents"} for b in ledger.bodies)
    assert {b["customer"] for b in ledger.bodies} == {"drill"}
    assert all(1 <= b["amount_cents"] <= 100_000 for b in ledger.bodies)
    assert ((df["latency_ms"] > 0) & (df["latency_ms"] < 1000)).all()
    took = (df["answered_at"] - df["sent_at"]).dt.total_seconds() * 1000
    assert (took - df["latency_ms"]).abs().max() < 0.01


def test_failure_window_is_classified(ledger: FakeLedger) -> None:
    spec = LoadSpec(rps=40, duration_s=1.0, timeout_s=2)
    t = Traffic(ledger.url, spec).start()
    time.sleep(0.3)
    ledger.mode = "503"
    time.sleep(0.35)
    ledger.mode = "ok"
    t.wait()
    df = t.records()
    assert len(df) == 40
    failed = df[~df["ok"]]
    assert 1 <= len(failed) <= 39
    assert set(failed["status"]) == {503}
    assert set(failed["error"]) == {"HTTP 503"}
    failed_posts = failed[failed["kind"] == "POST"]
    assert set(failed_posts["idempotency_key"]) == {
        k for _, k, _ in ledger.requests_with("POST", 503)
    }
    assert failed_posts["order_id"].isna().all()
    assert len(failed[failed["kind"] == "GET"]) == len(ledger.requests_with("GET", 503))
    assert t.acked_ids() == set(ledger.orders)
    # the failures form one block in time
    assert failed["seq"].max() - failed["seq"].min() + 1 == len(failed)


def test_hang_gives_timeouts_and_bounded_wait(ledger: FakeLedger) -> None:
    ledger.mode = "hang"
    spec = LoadSpec(rps=20, duration_s=0.5, timeout_s=0.3)
    t0 = time.monotonic()
    t = Traffic(ledger.url, spec).start()
    t.wait()
    took = time.monotonic() - t0
    assert took < 5  # bounded by duration + timeout, with room for a busy machine
    df = t.records()
    assert len(df) == 10
    assert set(df["error"]) == {"timeout"}
    assert set(df["status"]) == {0}
    assert not df["ok"].any()
    assert df["latency_ms"].between(290, 5000).all()
    assert (df["kind"] == "POST").all()  # nothing acked, so no GETs
    assert t.acked_ids() == set()


def test_saturation_is_recorded_not_sent(ledger: FakeLedger) -> None:
    ledger.mode = "hang"
    spec = LoadSpec(rps=50, duration_s=0.4, timeout_s=0.8, max_in_flight=2)
    t = Traffic(ledger.url, spec).start()
    time.sleep(0.2)
    mine = [th for th in threading.enumerate() if th.name.startswith(t._name)]
    assert len(mine) == 3  # scheduler and two workers
    assert all(th.daemon for th in mine)
    t.wait()
    df = t.records()
    assert len(df) == 20
    saturated = df[df["error"] == "client saturated"]
    sent = df[df["error"] != "client saturated"]
    assert list(sent["seq"]) == [0, 1]
    assert set(sent["error"]) == {"timeout"}
    assert len(saturated) == 18
    assert set(saturated["status"]) == {0}
    assert not saturated["ok"].any()
    assert saturated["latency_ms"].isna().all()
    assert len(ledger.requests_with("POST")) + len(ledger.bodies) == 0  # hung before logging


def test_stops_by_itself(ledger: FakeLedger) -> None:
    spec = LoadSpec(rps=20, duration_s=0.5)
    t = Traffic(ledger.url, spec).start()
    deadline = time.monotonic() + 10
    while t.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not t.running
    df = t.records()
    assert len(df) == 10
    assert offsets(t, df).max() < 0.5
    assert len(ledger.log) == 10
    time.sleep(0.1)
    assert not [th for th in threading.enumerate() if th.name.startswith(t._name)]


def test_stop_early(ledger: FakeLedger) -> None:
    spec = LoadSpec(rps=20, duration_s=30)
    t = Traffic(ledger.url, spec).start()
    time.sleep(0.33)
    t0 = time.monotonic()
    t.stop()
    assert time.monotonic() - t0 < 5
    assert not t.running
    n = len(t.records())
    assert 1 <= n <= 30
    time.sleep(0.3)
    assert len(t.records()) == n == len(ledger.log)


def test_stop_is_bounded_with_requests_in_flight(ledger: FakeLedger) -> None:
    ledger.mode = "hang"
    t = Traffic(ledger.url, LoadSpec(rps=10, duration_s=5, timeout_s=5)).start()
    time.sleep(0.15)
    t0 = time.monotonic()
    t.stop(timeout=0.2)
    assert time.monotonic() - t0 < 3
    assert t.running  # two requests still waiting for their answer
    ledger.release.set()
    deadline = time.monotonic() + 3
    while t.running and time.monotonic() < deadline:
        time.sleep(0.02)
    df = t.records()
    assert len(df) == 2
    assert set(df["status"]) == {503}


def test_context_manager_and_life_cycle(ledger: FakeLedger) -> None:
    t = Traffic(ledger.url, LoadSpec(rps=20, duration_s=10))
    with pytest.raises(UsageError, match="not started"):
        t.wait()
    assert t.started_at is None
    with t:
        assert t.started_at is not None and t.started_at.utcoffset() == timedelta(0)
        time.sleep(0.12)
        with pytest.raises(UsageError, match="already started"):
            t.start()
    assert not t.running
    assert 2 <= len(t.records()) <= 4


def test_connection_refused_is_a_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = Traffic(f"http://127.0.0.1:{port}", LoadSpec(rps=20, duration_s=0.2, timeout_s=1))
    t.start().wait()
    df = t.records()
    assert len(df) == 4
    assert set(df["status"]) == {0}
    assert all(e.startswith("ConnectionError: ") for e in df["error"]), set(df["error"])
    assert all("Connection refused" in e for e in df["error"]), set(df["error"])


def test_post_without_id_is_not_ok(ledger: FakeLedger) -> None:
    ledger.mode = "noid"
    t = Traffic(ledger.url, LoadSpec(rps=20, duration_s=0.2)).start()
    t.wait()
    df = t.records()
    assert set(df["status"]) == {201}
    assert not df["ok"].any()
    assert set(df["error"]) == {"HTTP 201 without an integer id in the body"}


def test_sessions_come_from_the_factory(ledger: FakeLedger) -> None:
    made: list[Any] = []

    def factory() -> Any:
        import requests

        s = requests.Session()
        s.trust_env = False
        s.headers["X-Test"] = "1"
        made.append(threading.current_thread().name)
        return s

    t = Traffic(ledger.url, LoadSpec(rps=20, duration_s=0.3), session_factory=factory)
    t.start().wait()
    assert len(t.records()) == 6
    # one per worker thread, reused (keep-alive): how many threads depends on the load
    assert 1 <= len(made) == len(set(made)) <= 6


def test_save_load_round_trip(ledger: FakeLedger, tmp_path: Path) -> None:
    spec = LoadSpec(rps=40, duration_s=0.5, timeout_s=2)
    t = Traffic(ledger.url, spec).start()
    time.sleep(0.2)
    ledger.mode = "503"
    t.wait()
    df = t.records()
    assert df["ok"].any() and not df["ok"].all()
    path = t.save(tmp_path / "records.csv")
    assert path == tmp_path / "records.csv"
    back = traffic.load_records(path)
    pd.testing.assert_frame_equal(back, df)
    pq = t.save(tmp_path / "records.parquet")
    assert pq.exists() and pq.suffix in (".parquet", ".csv")
    pd.testing.assert_frame_equal(Traffic.load_records(pq), df)


def test_for_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTBOOK_HOME", str(tmp_path))
    inv = Inventory(
        path=tmp_path / "staging" / "hosts.yml",
        hosts={"lb1": Host("lb1", "192.0.2.11", ("lb",))},
        groups={"lb": ("lb1",)},
        vars={"vip": "192.0.2.10"},
    )
    from vault_fixtures import write_vault

    from faultbook.errors import ConfigError

    with pytest.raises(ConfigError, match="vault_ledger_token_faultbook is missing"):
        Traffic.for_inventory(inv, LoadSpec())  # before any load: no token, no drill
    token = "ledger-token-0123456789abcdefghijklmnop"
    write_vault(inv, monkeypatch, {"vault_ledger_token_faultbook": token})
    t = Traffic.for_inventory(inv, LoadSpec())
    assert t.base_url == "https://192.0.2.10"
    s = t._session_factory()
    assert s.trust_env is False
    assert s.verify == str(tmp_path / "inventories/staging/pki/ca.crt")
    # The token goes to the VIP only, and no repr shows it.
    to_vip = s.prepare_request(requests.Request("GET", "https://192.0.2.10/orders/1"))
    assert to_vip.headers["Authorization"] == f"Bearer {token}"
    elsewhere = s.prepare_request(requests.Request("GET", "https://192.0.2.51:9090/"))
    assert "Authorization" not in elsewhere.headers
    assert token not in repr(s.auth) and "***" in repr(s.auth)


def test_drill_result_from_live_records(ledger: FakeLedger) -> None:
    """Traffic and drills together: a 503 window is one outage, recovered, nothing lost."""
    spec = LoadSpec(rps=50, duration_s=1.0, timeout_s=2)
    t = Traffic(ledger.url, spec).start()
    time.sleep(0.3)
    fault_at = pd.Timestamp.now(tz="UTC").to_pydatetime()
    ledger.mode = "503"
    time.sleep(0.4)
    ledger.mode = "ok"
    t.wait()
    df = t.records()
    r = DrillResult.from_records(df, fault_at=fault_at, present_ids=ledger.orders, stall_s=1.0)
    assert len(r.outages) == 1 and r.recovered
    assert 0.38 < r.rto_s < 3
    assert r.time_to_first_write_s is not None and 0.38 < r.time_to_first_write_s < 3
    assert r.lost_writes == 0 and r.acked_writes == len(ledger.orders)
    assert r.failed_requests == int((~df["ok"]).sum()) > 0
    lost = DrillResult.from_records(
        df, fault_at=fault_at, present_ids=sorted(ledger.orders)[:-3], stall_s=0.5
    )
    assert lost.lost_ids == sorted(ledger.orders)[-3:]
