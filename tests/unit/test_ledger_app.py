"""Unit tests for the ledger demo app: validation, idempotency, retry policy.

The app ships as one file inside the Ansible role; it is imported by path.
Its rules are pure functions and its database is an injected Store, so these
tests need neither Flask nor psycopg nor PostgreSQL.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType

import pytest

APP_PATH = Path(__file__).resolve().parents[2] / "playbooks/roles/ledger/files/ledger.py"


def _load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ledger_app_under_test", APP_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


ledger = _load_app()

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


class FakeStore:
    """An in-memory Store with the same contract as PgStore."""

    def __init__(self) -> None:
        self.rows: dict[str, ledger.Order] = {}
        self.calls = 0
        self.fail_next = 0  # raise DatabaseUnavailable this many times
        self.writable = True
        # what a standby holds (it may lag), and whether it answers
        self.standby_rows: dict[int, ledger.Order] = {}
        self.standby_up = True
        self.standby_calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ledger.DatabaseUnavailable("connection lost")

    def insert_or_get(self, new: ledger.NewOrder) -> tuple[ledger.Order, bool]:
        self._maybe_fail()
        existing = self.rows.get(new.idempotency_key)
        if existing is not None:
            return existing, False
        order = ledger.Order(
            id=len(self.rows) + 1,
            idempotency_key=new.idempotency_key,
            customer=new.customer,
            amount_cents=new.amount_cents,
            created_at=T0 + timedelta(seconds=len(self.rows)),
        )
        self.rows[new.idempotency_key] = order
        return order, True

    def get(self, order_id: int) -> ledger.Order | None:
        self._maybe_fail()
        return next((o for o in self.rows.values() if o.id == order_id), None)

    def get_from_standby(self, order_id: int) -> ledger.Order | None:
        self.standby_calls += 1
        if not self.standby_up:
            raise ledger.DatabaseUnavailable("no readable database host")
        return self.standby_rows.get(order_id)

    def check_writable(self) -> None:
        self._maybe_fail()
        if not self.writable:
            raise ledger.DatabaseUnavailable("connected to a server in recovery")


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


GOOD = {"customer": "Ada", "amount_cents": 1250}


# ----------------------------------------------------------------------------
# Idempotency-Key header
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a", "A" * 128, "order-1.2:3_4", "0"])
def test_valid_idempotency_keys_are_accepted(key: str) -> None:
    assert ledger.parse_idempotency_key(key) == key


@pytest.mark.parametrize(
    ("key", "code"),
    [
        (None, "missing_idempotency_key"),
        ("", "missing_idempotency_key"),
        ("A" * 129, "invalid_idempotency_key"),
        ("has space", "invalid_idempotency_key"),
        ("slash/key", "invalid_idempotency_key"),
        ("quote'key", "invalid_idempotency_key"),
        ("ключ", "invalid_idempotency_key"),
        ("trailing-newline\n", "invalid_idempotency_key"),
    ],
)
def test_bad_idempotency_keys_are_refused_with_400(key: str | None, code: str) -> None:
    with pytest.raises(ledger.ApiError) as info:
        ledger.parse_idempotency_key(key)
    assert (info.value.status, info.value.code) == (400, code)


# ----------------------------------------------------------------------------
# Body size
# ----------------------------------------------------------------------------


def test_body_at_the_limit_is_read_whole() -> None:
    data = b"x" * ledger.MAX_BODY_BYTES
    assert ledger.read_limited(io.BytesIO(data).read) == data


def test_chunked_body_over_the_limit_is_refused_with_413() -> None:
    data = b"x" * (ledger.MAX_BODY_BYTES + 1)
    with pytest.raises(ledger.ApiError) as info:
        ledger.read_limited(io.BytesIO(data).read)
    assert info.value.status == 413


def test_declared_oversize_body_is_refused_without_reading() -> None:
    def read(_n: int) -> bytes:
        raise AssertionError("the body must not be read")

    with pytest.raises(ledger.ApiError) as info:
        ledger.read_limited(read, declared_length=ledger.MAX_BODY_BYTES + 1)
    assert info.value.status == 413


def test_a_refused_body_is_drained_up_to_the_cap() -> None:
    stream = io.BytesIO(b"x" * 40000)
    ledger.drain(stream.read, 40000)
    assert stream.read() == b""
    big = io.BytesIO(b"x" * 10)

    def never(_n: int) -> bytes:
        raise AssertionError("a body over the cap must not be read")

    ledger.drain(never, ledger.DRAIN_MAX_BYTES + 1)
    ledger.drain(big.read, None)  # chunked: read until the end (or the cap)
    assert big.read() == b""


def test_body_arriving_in_small_chunks_is_reassembled() -> None:
    chunks = [b'{"customer": ', b'"Ada", ', b'"amount_cents": 5}', b""]

    def read(_n: int) -> bytes:
        return chunks.pop(0)

    assert ledger.read_limited(read) == b'{"customer": "Ada", "amount_cents": 5}'


# ----------------------------------------------------------------------------
# Order body
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"not json",
        b"\xff\xfe\x00",
        b'{"customer": "Ada", "amount_cents": NaN}',
        b'{"customer": "Ada", "amount_cents": Infinity}',
        b"[" * 5000 + b"]" * 5000,
    ],
    ids=["empty", "truncated", "text", "bad-utf8", "nan", "infinity", "deep-nesting"],
)
def test_malformed_json_is_refused_with_400(raw: bytes) -> None:
    with pytest.raises(ledger.ApiError) as info:
        ledger.parse_order_body(raw)
    assert (info.value.status, info.value.code) == (400, "malformed_json")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"amount_cents": 1}, "customer"),
        ({"customer": "Ada"}, "amount_cents"),
        ({"customer": "Ada", "amount_cents": -1}, "amount_cents"),
        ({"customer": "Ada", "amount_cents": True}, "amount_cents"),
        ({"customer": "Ada", "amount_cents": 1.0}, "amount_cents"),
        ({"customer": "Ada", "amount_cents": "100"}, "amount_cents"),
        ({"customer": "Ada", "amount_cents": None}, "amount_cents"),
        ({"customer": "Ada", "amount_cents": 2**63}, "amount_cents"),
        ({"customer": "", "amount_cents": 1}, "customer"),
        ({"customer": "   ", "amount_cents": 1}, "customer"),
        ({"customer": "x" * 101, "amount_cents": 1}, "customer"),
        ({"customer": 42, "amount_cents": 1}, "customer"),
        ({"customer": None, "amount_cents": 1}, "customer"),
        ({"customer": "nul\u0000byte", "amount_cents": 1}, "customer"),
        ({"customer": "lone\ud800surrogate", "amount_cents": 1}, "customer"),
        ({"customer": "Ada", "amount_cents": 1, "note": "hi"}, "note"),
    ],
)
def test_invalid_orders_are_refused_with_422_naming_the_field(
    payload: dict[str, object], field: str
) -> None:
    with pytest.raises(ledger.ApiError) as info:
        ledger.parse_order_body(body(payload))
    assert info.value.status == 422
    assert field in info.value.fields


@pytest.mark.parametrize("payload", [[], "Ada", 5, None])
def test_json_that_is_not_an_object_is_refused_with_422(payload: object) -> None:
    with pytest.raises(ledger.ApiError) as info:
        ledger.parse_order_body(body(payload))
    assert info.value.status == 422


def test_all_field_problems_are_reported_at_once() -> None:
    with pytest.raises(ledger.ApiError) as info:
        ledger.parse_order_body(body({"customer": "", "amount_cents": -5, "extra": 1}))
    assert set(info.value.fields) == {"customer", "amount_cents", "extra"}


@pytest.mark.parametrize(
    "payload",
    [
        {"customer": "A", "amount_cents": 0},
        {"customer": "x" * 100, "amount_cents": 2**63 - 1},
        {"customer": "Zoë Ünicode 🚀", "amount_cents": 7},
    ],
)
def test_boundary_orders_are_accepted(payload: dict[str, object]) -> None:
    assert ledger.parse_order_body(body(payload)) == (payload["customer"], payload["amount_cents"])


# ----------------------------------------------------------------------------
# POST /orders: idempotency and "bad input writes nothing"
# ----------------------------------------------------------------------------


def test_first_post_creates_the_row_and_answers_201() -> None:
    store = FakeStore()
    reply = ledger.handle_create_order("k-1", body(GOOD), store)
    assert reply.status == 201
    assert reply.body == {
        "id": 1,
        "idempotency_key": "k-1",
        "customer": "Ada",
        "amount_cents": 1250,
        "created_at": "2024-05-01T12:00:00.123456Z",
    }
    assert ("Location", "/orders/1") in reply.headers
    assert len(store.rows) == 1


def test_repeated_key_with_same_body_returns_the_first_row_with_200() -> None:
    store = FakeStore()
    first = ledger.handle_create_order("k-1", body(GOOD), store)
    again = ledger.handle_create_order("k-1", body(GOOD), store)
    assert again.status == 200
    assert again.body == first.body
    assert ("Idempotent-Replayed", "true") in again.headers
    assert len(store.rows) == 1


def test_repeated_key_with_different_body_answers_409_and_keeps_the_first_row() -> None:
    store = FakeStore()
    ledger.handle_create_order("k-1", body(GOOD), store)
    reply = ledger.handle_create_order("k-1", body({**GOOD, "amount_cents": 9999}), store)
    assert reply.status == 409
    assert reply.body["error"] == "idempotency_key_reused"
    assert store.rows["k-1"].amount_cents == 1250
    assert len(store.rows) == 1


def test_distinct_keys_create_distinct_rows() -> None:
    store = FakeStore()
    a = ledger.handle_create_order("k-1", body(GOOD), store)
    b = ledger.handle_create_order("k-2", body(GOOD), store)
    assert (a.status, b.status) == (201, 201)
    assert a.body["id"] != b.body["id"]


@pytest.mark.parametrize(
    ("key", "raw", "status"),
    [
        (None, body(GOOD), 400),
        ("bad key", body(GOOD), 400),
        ("k-1", b"{not json", 400),
        ("k-1", body({"customer": "Ada"}), 422),
        ("k-1", body({"customer": "Ada", "amount_cents": -1}), 422),
        ("k-1", body({"customer": "Ada", "amount_cents": False}), 422),
    ],
)
def test_bad_requests_never_reach_the_store(key: str | None, raw: bytes, status: int) -> None:
    store = FakeStore()
    reply = ledger.handle_create_order(key, raw, store)
    assert reply.status == status
    assert store.calls == 0
    assert store.rows == {}


def test_sql_metacharacters_are_stored_as_plain_data() -> None:
    store = FakeStore()
    nasty = 'Robert\'); DROP TABLE orders;-- "%s" \\x00'
    reply = ledger.handle_create_order("k-sql", body({"customer": nasty, "amount_cents": 1}), store)
    assert reply.status == 201
    assert store.rows["k-sql"].customer == nasty


def test_sql_uses_placeholders_not_string_formatting() -> None:
    for statement in (ledger.INSERT_SQL, ledger.SELECT_BY_KEY_SQL, ledger.SELECT_BY_ID_SQL):
        assert "%s" in statement
        assert "{" not in statement and "'" not in statement
        # every statement returns the columns Order is built from, in that order
        assert ", ".join(ledger.ORDER_COLUMNS) in statement


def test_database_unavailable_during_post_answers_503_with_retry_after() -> None:
    store = FakeStore()
    store.fail_next = 1
    reply = ledger.handle_create_order("k-1", body(GOOD), store)
    assert reply.status == 503
    assert ("Retry-After", "1") in reply.headers


# ----------------------------------------------------------------------------
# GET /orders/<id>, /readyz
# ----------------------------------------------------------------------------


def test_get_returns_the_committed_row() -> None:
    store = FakeStore()
    created = ledger.handle_create_order("k-1", body(GOOD), store)
    reply = ledger.handle_get_order(created.body["id"], store)
    assert (reply.status, reply.body) == (200, created.body)


@pytest.mark.parametrize("order_id", [0, 42, 2**63, 10**30])
def test_get_unknown_or_out_of_range_id_answers_404(order_id: int) -> None:
    store = FakeStore()
    assert ledger.handle_get_order(order_id, store).status == 404


def test_readiness_follows_the_store() -> None:
    store = FakeStore()
    assert ledger.handle_readiness(store).status == 200
    store.writable = False
    reply = ledger.handle_readiness(store)
    assert reply.status == 503
    assert "recovery" in reply.body["reason"]


# ----------------------------------------------------------------------------
# Retry policy
# ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_retry_rides_out_a_short_outage_and_inserts_once() -> None:
    store = FakeStore()
    store.fail_next = 3
    clock = FakeClock()
    retries: list[Exception] = []

    def retry(fn):  # type: ignore[no-untyped-def]
        return ledger.call_with_retry(
            fn, 8.0, sleep=clock.sleep, clock=clock, on_retry=retries.append
        )

    reply = ledger.handle_create_order("k-1", body(GOOD), store, retry)
    assert reply.status == 201
    assert len(store.rows) == 1
    assert len(retries) == 3
    assert clock.sleeps == [0.05, 0.1, 0.2]


def test_retry_gives_up_at_the_deadline_with_503() -> None:
    store = FakeStore()
    store.fail_next = 10**6
    clock = FakeClock()

    def retry(fn):  # type: ignore[no-untyped-def]
        return ledger.call_with_retry(fn, 8.0, sleep=clock.sleep, clock=clock)

    reply = ledger.handle_create_order("k-1", body(GOOD), store, retry)
    assert reply.status == 503
    assert clock.now - 100.0 == pytest.approx(8.0)
    assert max(clock.sleeps) <= 0.25
    assert store.rows == {}


def test_retry_does_not_catch_other_errors() -> None:
    clock = FakeClock()

    def boom() -> ledger.Reply:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        ledger.call_with_retry(boom, 8.0, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []


def test_settings_read_the_environment() -> None:
    settings = ledger.Settings.from_env(
        {"LEDGER_DSN": "host=a,b", "LEDGER_DB_RETRY_SECONDS": "2.5"}
    )
    assert settings.dsn == "host=a,b"
    assert settings.retry_seconds == 2.5
    assert settings.ready_timeout_ms == 500


def test_created_at_is_rendered_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert ledger.iso_utc(datetime(2024, 1, 1, 14, 0, tzinfo=plus_two)) == (
        "2024-01-01T12:00:00.000000Z"
    )


# ----------------------------------------------------------------------------
# Flask wiring (runs only where Flask is installed, e.g. on a web host)
# ----------------------------------------------------------------------------


TOKEN = "drills-token-0123456789abcdefghij"
OTHER_TOKEN = "bench-token-0123456789abcdefghijk"
TOKENS = ledger.ClientTokens.parse(
    f"faultbook sha256:{ledger.token_digest(TOKEN).hex()}\n"
    f"bench sha256:{ledger.token_digest(OTHER_TOKEN).hex()}\n",
    "test",
)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def app_with(store: FakeStore, tokens: object = TOKENS):  # type: ignore[no-untyped-def]
    pytest.importorskip("flask")
    pytest.importorskip("prometheus_client")
    return ledger.create_app(ledger.Settings(retry_seconds=0.0), store=store, tokens=tokens)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def client(store: FakeStore):  # type: ignore[no-untyped-def]
    return app_with(store).test_client()


def test_http_post_then_get(client) -> None:  # type: ignore[no-untyped-def]
    created = client.post("/orders", json=GOOD, headers={"Idempotency-Key": "k-1", **AUTH})
    assert created.status_code == 201
    fetched = client.get(f"/orders/{created.get_json()['id']}", headers=AUTH)
    assert fetched.get_json() == created.get_json()


def test_http_oversize_body_is_413(client) -> None:  # type: ignore[no-untyped-def]
    big = b"x" * (ledger.MAX_BODY_BYTES + 1)
    resp = client.post("/orders", data=big, headers={"Idempotency-Key": "k-1", **AUTH})
    assert resp.status_code == 413


# ----------------------------------------------------------------------------
# Client tokens
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, "missing_token"),
        ({"Authorization": ""}, 401, "missing_token"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "missing_token"),
        ({"Authorization": "Bearer "}, 401, "missing_token"),
        ({"Authorization": "Bearer not-the-token"}, 403, "invalid_token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403, "invalid_token"),
    ],
)
def test_a_post_without_a_valid_token_is_refused_and_writes_nothing(
    store: FakeStore, headers: dict[str, str], status: int, error: str
) -> None:
    client = app_with(store).test_client()
    resp = client.post("/orders", json=GOOD, headers={"Idempotency-Key": "k-1", **headers})
    assert resp.status_code == status
    assert resp.get_json()["error"] == error
    assert (resp.headers.get("WWW-Authenticate") is not None) is (status == 401)
    assert store.rows == {} and store.calls == 0
    assert TOKEN not in resp.get_data(as_text=True)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'ledger_auth_refused_total{{reason="{error}"}} 1.0' in metrics


def test_every_client_has_its_own_token_and_reads_need_one(store: FakeStore) -> None:
    client = app_with(store).test_client()
    other = {"Authorization": f"bearer {OTHER_TOKEN}"}  # the scheme is case-insensitive
    created = client.post("/orders", json=GOOD, headers={"Idempotency-Key": "k-1", **other})
    assert created.status_code == 201
    assert client.get("/orders/1").status_code == 401
    assert client.get("/orders/1", headers={"Authorization": "Bearer x"}).status_code == 403
    assert client.get("/orders/1", headers=AUTH).status_code == 200
    assert store.calls == 2  # the refused reads never reached the store
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(open_path).status_code == 200


def test_client_for_names_the_client_and_compares_every_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compared: list[bytes] = []
    real = ledger.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(ledger.hmac, "compare_digest", spy)
    assert TOKENS.client_for(TOKEN) == "faultbook"
    assert len(compared) == 2  # no early exit on the first client's match
    assert TOKENS.client_for(OTHER_TOKEN) == "bench"
    assert TOKENS.client_for("") is None
    assert TOKENS.clients == ("faultbook", "bench")


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "names no client"),
        ("# only a comment\n\n", "names no client"),
        (f"faultbook {DIGEST} extra\n", "line 1: expected '<client> sha256:<64 hex digits>'"),
        (f"Faultbook {DIGEST}\n", "line 1: client name 'Faultbook' must be"),
        ("faultbook s3cr3t-token-in-clear\n", "never the token itself"),
        ("faultbook sha256:abc\n", "expected '<client> sha256:<64 hex digits>'"),
        (f"a {DIGEST}\n# c\na sha256:{'cd' * 32}\n", "line 3: client a is already on line 1"),
        (f"a {DIGEST}\nb {DIGEST}\n", "line 2: client b has the same token as a"),
    ],
)
def test_a_bad_tokens_file_is_one_line_naming_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ledger.TokenConfigError) as err:
        ledger.ClientTokens.parse(text, "/etc/ledger/api-tokens")
    assert message in str(err.value)
    assert str(err.value).startswith("/etc/ledger/api-tokens")
    assert "\n" not in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_the_tokens_file_must_not_be_accessible_to_every_user(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens"
    path.write_text(f"faultbook {DIGEST}\n")
    path.chmod(0o644)
    with pytest.raises(ledger.TokenConfigError, match=r"accessible to every user \(mode 0644\)"):
        ledger.load_tokens(str(path))
    path.chmod(0o640)
    assert ledger.load_tokens(str(path)).clients == ("faultbook",)
    with pytest.raises(ledger.TokenConfigError, match="cannot read the client tokens file"):
        ledger.load_tokens(str(tmp_path / "missing"))
    with pytest.raises(ledger.TokenConfigError, match="not a regular file"):
        ledger.load_tokens(str(tmp_path))


def test_the_app_does_not_start_without_usable_tokens(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("flask")
    pytest.importorskip("prometheus_client")
    path = tmp_path / "api-tokens"
    path.write_text("faultbook nonsense\n")
    path.chmod(0o600)
    for settings in (ledger.Settings(), ledger.Settings(tokens_file=str(path))):
        with pytest.raises(SystemExit) as stop:
            ledger.create_app(settings, store=FakeStore())
        assert stop.value.code == ledger.WORKER_BOOT_ERROR
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors[0].startswith("cannot start: LEDGER_TOKENS_FILE is not set")
    assert errors[1].startswith(f"cannot start: {path} line 1:")
    assert ledger.Settings.from_env({"LEDGER_TOKENS_FILE": str(path)}).tokens_file == str(path)


def test_check_tokens_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "api-tokens"
    path.write_text(f"faultbook {DIGEST}\nbench sha256:{'cd' * 32}\n")
    path.chmod(0o640)
    assert ledger.main(["check-tokens", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: 2 clients: faultbook, bench"
    path.chmod(0o644)
    assert ledger.main(["check-tokens", str(path)]) == 1
    assert "accessible to every user" in capsys.readouterr().err
    assert ledger.main([]) == 2


def test_http_metrics_count_requests(client) -> None:  # type: ignore[no-untyped-def]
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ledger_http_requests_total{endpoint="/healthz",method="GET",status="200"}' in text


def _make_conninfo(**kw: str) -> str:
    return " ".join(f"{k}={v}" for k, v in kw.items())


def test_host_attempts_split_a_multi_host_string_keeping_every_option() -> None:
    params = {
        "host": "10.0.0.1,10.0.0.2,10.0.0.3",
        "port": "5432",
        "target_session_attrs": "read-write",
        "connect_timeout": "2",
    }
    out = ledger.host_attempts(params, _make_conninfo)
    assert out == [
        f"host=10.0.0.{i} port=5432 target_session_attrs=read-write connect_timeout=2"
        for i in (1, 2, 3)
    ]


def test_host_attempts_pair_hosts_with_their_own_ports() -> None:
    out = ledger.host_attempts({"host": "a,b", "port": "5432,6432"}, _make_conninfo)
    assert out == ["host=a port=5432", "host=b port=6432"]


def test_read_params_keep_the_dsn_hosts_and_tls_but_accept_any_session() -> None:
    params = {
        "host": "10.0.0.1,10.0.0.2",
        "port": "5432",
        "target_session_attrs": "read-write",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/faultbook/tls/ca.crt",
        "connect_timeout": "10",
    }
    out = ledger.host_attempts(ledger.read_params(params), _make_conninfo)
    assert out == [
        f"host=10.0.0.{i} port=5432 target_session_attrs=any sslmode=verify-full "
        "sslrootcert=/etc/faultbook/tls/ca.crt connect_timeout=2"
        for i in (1, 2)
    ]
    assert params["target_session_attrs"] == "read-write"  # the primary's DSN is untouched


# ----------------------------------------------------------------------------
# Reconnect order, the connection gate, standby reads (PgStore, fake psycopg)
# ----------------------------------------------------------------------------


class _FakeError(Exception):
    pass


class _FakeOperationalError(_FakeError):
    pass


class _FakeInterfaceError(_FakeError):
    pass


class _FakePsycopg:
    """psycopg as PgStore uses it. A conninfo is "<host> <rw|any>"; each host
    is "primary", "standby" or "down" (a connect or query there fails)."""

    Error = _FakeError
    OperationalError = _FakeOperationalError
    InterfaceError = _FakeInterfaceError

    def __init__(self, **hosts: str) -> None:
        self.hosts = hosts
        self.rows: dict[str, dict[int, tuple[object, ...]]] = {h: {} for h in hosts}
        self.calls: list[str] = []

    def connect(self, conninfo: str, autocommit: bool = True) -> _FakeConn:
        self.calls.append(conninfo)
        host, mode = conninfo.split()
        if self.hosts[host] == "down":
            raise _FakeOperationalError(f'connection to server at "{host}" failed: timeout expired')
        if mode == "rw" and self.hosts[host] == "standby":
            raise _FakeOperationalError(
                f'connection to server at "{host}", port 5432 failed: session is read-only'
            )
        return _FakeConn(self, host)


class _FakeConn:
    def __init__(self, fake: _FakePsycopg, host: str) -> None:
        self.fake = fake
        self.host = host
        self.closed = False

    def transaction(self, force_rollback: bool = False):  # type: ignore[no-untyped-def]
        return contextlib.nullcontext()

    def cursor(self) -> _FakeCursor:
        return _FakeCursor(self)

    def close(self) -> None:
        self.closed = True


class _FakeCursor:
    def __init__(self, conn: _FakeConn) -> None:
        self.conn = conn
        self.row: tuple[object, ...] | None = None

    def __enter__(self) -> _FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        fake = self.conn.fake
        if fake.hosts[self.conn.host] == "down":
            raise _FakeOperationalError("server closed the connection unexpectedly")
        assert sql == ledger.SELECT_BY_ID_SQL
        self.row = fake.rows[self.conn.host].get(int(params[0]))  # type: ignore[call-overload]

    def fetchone(self) -> tuple[object, ...] | None:
        return self.row


def _connector(fake: _FakePsycopg, mode: str = "rw", failed=None):  # type: ignore[no-untyped-def]
    attempts = [f"{host} {mode}" for host in fake.hosts]
    what = "read-write" if mode == "rw" else "readable"
    return ledger.Connector(fake, attempts, failed or ledger.FailedHosts(), what)


def _pg_store(fake: _FakePsycopg) -> object:
    store = ledger.PgStore.__new__(ledger.PgStore)
    failed = ledger.FailedHosts()
    store._psycopg = fake
    store._primary = _connector(fake, "rw", failed)
    store._reader = _connector(fake, "any", failed)
    store._ready_timeout_ms = 500
    store._on_error = None
    return store


def test_host_order_last_primary_first_then_healthy_then_failed_oldest_first() -> None:
    failed = ledger.FailedHosts()
    assert failed.order(4) == [0, 1, 2, 3]
    assert failed.order(4, first=2) == [2, 0, 1, 3]
    failed.failed(3)
    failed.failed(0)
    assert failed.order(4, first=2) == [2, 1, 3, 0]
    failed.failed(3)  # failed again: now the newest failure
    assert failed.order(4, first=2) == [2, 1, 0, 3]
    failed.failed(2)  # the last primary failed since: no longer first
    assert failed.order(4, first=2) == [1, 0, 3, 2]
    failed.answered(0)
    assert failed.order(4, first=1, avoid=1) == [0, 1, 3, 2]  # avoid beats first


def test_connect_skips_dead_hosts_and_prefers_the_last_good_one() -> None:
    fake = _FakePsycopg(h1="down", h2="down", h3="primary")
    conn = _connector(fake)
    assert conn.connection().host == "h3"
    assert fake.calls == ["h1 rw", "h2 rw", "h3 rw"]
    conn.drop()
    fake.calls.clear()
    assert conn.connection().host == "h3"
    assert fake.calls == ["h3 rw"]  # the host that gave a read-write session is tried first


def test_after_a_failover_new_connections_skip_the_dead_former_primary() -> None:
    fake = _FakePsycopg(h1="primary", h2="standby", h3="standby")
    conn = _connector(fake)
    assert conn.connection().host == "h1"
    fake.hosts.update(h1="down", h3="primary")  # h1 crashed, h3 was promoted
    conn.drop()
    fake.calls.clear()
    assert conn.connection().host == "h3"
    assert fake.calls == ["h1 rw", "h2 rw", "h3 rw"]  # the one connect that finds out
    conn.drop()
    fake.calls.clear()
    assert conn.connection().host == "h3"
    assert fake.calls == ["h3 rw"]
    fake.hosts.update(h3="down", h2="primary")  # h3 crashes too, h2 is promoted
    conn.drop()
    fake.calls.clear()
    assert conn.connection().host == "h2"
    # h3 first (the last primary, not failed yet), then h2 in inventory order;
    # h1 has failed, so it comes last and is never reached
    assert fake.calls == ["h3 rw", "h2 rw"]
    fake.hosts.update(h2="down", h1="primary")  # h1 is back and promoted
    conn.drop()
    fake.calls.clear()
    assert conn.connection().host == "h1"
    assert fake.calls == ["h2 rw", "h1 rw"]  # failed hosts: h1 (older) before h3


def test_a_standby_that_answers_is_not_a_failed_host() -> None:
    fake = _FakePsycopg(h1="standby", h2="down", h3="primary")
    conn = _connector(fake)
    assert conn.connection().host == "h3"
    fake.hosts.update(h3="down", h2="primary")
    conn.drop()
    fake.calls.clear()
    assert conn.connection().host == "h2"
    # h3 first (the last primary, not failed yet); h1 answered as a standby
    # before, so it keeps its normal place, ahead of h2, which had failed
    assert fake.calls == ["h3 rw", "h1 rw", "h2 rw"]


def test_connect_cools_down_after_every_host_failed() -> None:
    fake = _FakePsycopg(h1="down", h2="standby", h3="down")
    conn = _connector(fake)
    with pytest.raises(_FakeOperationalError, match="no read-write database host"):
        conn.connection()
    assert len(fake.calls) == 3
    with pytest.raises(_FakeOperationalError, match="failed .* ago"):
        conn.connection()
    assert len(fake.calls) == 3  # nobody hammered the dead hosts during the cool-down
    conn._failed_at -= ledger.CONNECT_COOLDOWN_S
    fake.hosts["h2"] = "primary"
    fake.calls.clear()
    assert conn.connection().host == "h2"
    assert fake.calls == ["h2 rw"]  # the standby that answered before the failed hosts


ROW = (7, "k-7", "Ada", 1250, T0)


def test_pgstore_reads_on_a_standby_while_the_primary_is_lost() -> None:
    fake = _FakePsycopg(h1="primary", h2="standby", h3="standby")
    fake.rows["h1"][7] = fake.rows["h2"][7] = ROW  # h3 lags
    store = _pg_store(fake)
    assert store.get(7).id == 7
    assert ledger.handle_get_order(7, store, standby_reads=True).headers == (
        ("X-Ledger-Source", "primary"),
    )
    fake.hosts["h1"] = "down"  # the primary crashes under an open connection
    fake.calls.clear()
    reply = ledger.handle_get_order(7, store, standby_reads=True)
    assert (reply.status, reply.body["id"]) == (200, 7)
    assert ("X-Ledger-Source", "standby") in reply.headers
    # the read went to another host than the lost primary: no wait on h1
    assert fake.calls == ["h2 any"]
    # the row is not on the host the read connection reached: no 404
    store._reader.drop()
    store._reader.last_good = 2  # say the read connection last used h3 (lagging)
    fake.calls.clear()
    with pytest.raises(ledger.DatabaseUnavailable):
        store.get(7)
    assert store.get_from_standby(7) is None
    assert fake.calls[-1] == "h3 any"
    reply = ledger.handle_get_order(7, store, standby_reads=True)
    assert reply.status == 503
    fake.hosts["h2"] = "primary"  # h2 is promoted
    store._primary._failed_at = float("-inf")  # the cool-down is over
    fake.calls.clear()
    reader = store._reader._local.conn
    assert store.get(7).id == 7
    assert fake.calls == ["h2 rw"]  # straight to the new primary, h1 tried last
    assert reader.closed  # the primary answers: the read connection is closed


def test_get_from_a_standby_when_the_primary_is_unavailable() -> None:
    store = FakeStore()
    created = ledger.handle_create_order("k-1", body(GOOD), store)
    store.standby_rows[1] = store.rows["k-1"]
    store.fail_next = 1
    reply = ledger.handle_get_order(1, store, standby_reads=True)
    assert (reply.status, reply.body) == (200, created.body)
    assert reply.headers == (("X-Ledger-Source", "standby"),)


def test_a_row_missing_on_a_standby_is_never_404_but_retried_then_503() -> None:
    store = FakeStore()
    ledger.handle_create_order("k-1", body(GOOD), store)
    store.fail_next = 10**6  # the primary stays unavailable; the standby lags
    clock = FakeClock()

    def retry(fn):  # type: ignore[no-untyped-def]
        return ledger.call_with_retry(fn, 8.0, sleep=clock.sleep, clock=clock)

    reply = ledger.handle_get_order(1, store, retry, standby_reads=True)
    assert reply.status == 503
    assert "may lag" in reply.body["message"]
    assert store.standby_calls > 1  # every attempt asked the standby again
    # the standby catches up within the budget: 200
    store.standby_calls = 0

    def sleep_while_the_standby_catches_up(seconds: float) -> None:
        clock.sleep(seconds)
        store.standby_rows[1] = store.rows["k-1"]

    def retry_catching_up(fn):  # type: ignore[no-untyped-def]
        return ledger.call_with_retry(
            fn, 8.0, sleep=sleep_while_the_standby_catches_up, clock=clock
        )

    reply = ledger.handle_get_order(1, store, retry_catching_up, standby_reads=True)
    assert (reply.status, reply.headers) == (200, (("X-Ledger-Source", "standby"),))
    assert store.standby_calls == 2  # not found, then found after the catch-up


def test_primary_and_standby_both_unavailable_answers_503_naming_both() -> None:
    store = FakeStore()
    store.fail_next = 1
    store.standby_up = False
    reply = ledger.handle_get_order(1, store, standby_reads=True)
    assert reply.status == 503
    assert "connection lost" in reply.body["message"]
    assert "no readable database host" in reply.body["message"]


def test_when_the_primary_answers_the_standby_is_never_asked() -> None:
    store = FakeStore()
    store.standby_rows[1] = ledger.Order(1, "k-1", "Ada", 1, T0)  # (cannot happen)
    reply = ledger.handle_get_order(1, store, standby_reads=True)
    assert reply.status == 404  # the primary's answer, as before
    assert reply.headers == (("X-Ledger-Source", "primary"),)
    assert store.standby_calls == 0


def test_standby_reads_off_keeps_the_old_behaviour() -> None:
    store = FakeStore()
    ledger.handle_create_order("k-1", body(GOOD), store)
    store.standby_rows[1] = store.rows["k-1"]
    store.fail_next = 1
    assert ledger.handle_get_order(1, store, standby_reads=False).status == 503
    assert store.standby_calls == 0


def test_post_never_reads_on_a_standby() -> None:
    store = FakeStore()
    ledger.handle_create_order("k-1", body(GOOD), store)
    store.standby_rows[1] = store.rows["k-1"]
    store.fail_next = 1
    assert ledger.handle_create_order("k-1", body(GOOD), store).status == 503
    assert store.standby_calls == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        ("", True),
        ("on", True),
        ("true", True),
        ("1", True),
        ("off", False),
        ("False", False),
        ("0", False),
        ("no", False),
    ],
)
def test_standby_reads_setting(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"LEDGER_STANDBY_READS": value}
    assert ledger.Settings.from_env(env).standby_reads is expected


def test_a_bad_standby_reads_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="LEDGER_STANDBY_READS"):
        ledger.Settings.from_env({"LEDGER_STANDBY_READS": "maybe"})


def test_http_get_from_a_standby_sets_the_header_and_counts_it() -> None:
    pytest.importorskip("flask")
    pytest.importorskip("prometheus_client")
    store = FakeStore()
    client = app_with(store).test_client()
    created = client.post("/orders", json=GOOD, headers={"Idempotency-Key": "k-1", **AUTH})
    assert client.get("/orders/1", headers=AUTH).headers["X-Ledger-Source"] == "primary"
    store.standby_rows[1] = store.rows["k-1"]
    store.fail_next = 1
    fetched = client.get("/orders/1", headers=AUTH)
    assert fetched.get_json() == created.get_json()
    assert fetched.headers["X-Ledger-Source"] == "standby"
    text = client.get("/metrics").get_data(as_text=True)
    assert "ledger_standby_reads_total 1.0" in text


def test_the_role_renders_the_standby_reads_setting() -> None:
    import jinja2
    import yaml
    from ansible.module_utils.parsing.convert_bool import boolean

    role = APP_PATH.parents[1]
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
    option = spec["argument_specs"]["main"]["options"]["ledger_standby_reads"]
    assert defaults["ledger_standby_reads"] is True
    assert (option["type"], option["default"]) == ("bool", True)
    line = next(
        line
        for line in (role / "templates/ledger.env.j2").read_text().splitlines()
        if line.startswith("LEDGER_STANDBY_READS=")
    )
    env = jinja2.Environment(autoescape=False)  # noqa: S701 (an env file, not HTML)
    env.filters["bool"] = boolean
    for value, words in ((True, "on"), ("false", "off"), ("yes", "on")):
        rendered = env.from_string(line).render(ledger_standby_reads=value)
        key, _, flag = rendered.partition("=")
        assert ledger.Settings.from_env({key: flag}).standby_reads is (words == "on")
