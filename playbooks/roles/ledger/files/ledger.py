"""ledger: the faultbook demo app, the system under test.

Installed by the Ansible role ``ledger`` as /opt/ledger/ledger.py and served by
Debian's gunicorn::

    gunicorn --config /etc/ledger/gunicorn.conf.py 'ledger:create_app()'

HTTP interface
    Every /orders request needs ``Authorization: Bearer <token>`` with a
    client's token (see "Client tokens" below): without one 401, with a
    wrong one 403; either way the database is not touched.
    POST /orders        JSON {"customer": str, "amount_cents": int} with an
                        Idempotency-Key header. 201 and the row once the
                        transaction has committed; 200 and the first row when
                        the key was seen before with the same body; 409 when
                        the key was seen before with a different body.
    GET  /orders/<id>   200 and the row, or 404. ``X-Ledger-Source: primary``;
                        while the primary is unavailable, 200 and the row
                        read on a standby with ``X-Ledger-Source: standby``
                        (never a 404 from a standby).
    GET  /healthz       200 while the process is alive (no database access).
    GET  /readyz        200 only when this process can run a write
                        transaction on the primary, else 503.
    GET  /metrics       Prometheus text format.

Client tokens
    The file named by ``LEDGER_TOKENS_FILE`` holds one line per client,
    ``<client> sha256:<hex digest of its token>``; the web host never holds a
    token itself. The file must not be accessible to every user (the app
    refuses to start otherwise). A token is compared by its digest, in
    constant time, against every client's. Reads need a token too: ids are
    sequential, so an open GET would hand anyone on the network every
    customer's name and amount. /healthz, /readyz and /metrics need none
    (no customer data; HAProxy and Prometheus call them).
    ``python3 ledger.py check-tokens FILE`` checks a file (the role's
    ``validate:``).

Layers, so that the rules can be tested without Flask or a database:

- pure validation: ``parse_idempotency_key``, ``read_limited``,
  ``parse_order_body``; client tokens: ``ClientTokens``, ``authorize``;
- request handlers that return a ``Reply``: ``handle_create_order``,
  ``handle_get_order``, ``handle_readiness``; they talk to a ``Store``;
- ``call_with_retry``: the retry policy for an unavailable database, with an
  injectable clock and sleep;
- ``PgStore``: psycopg 3, one connection per thread, dropped on any error,
  and one more per thread for standby reads while the primary is unavailable;
- ``create_app``: the Flask and prometheus_client wiring. Flask, psycopg and
  prometheus_client are imported there, not at module level.

Configuration comes from the environment (see ``Settings``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import stat
import sys
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger("ledger")

MAX_BODY_BYTES = 16 * 1024
CUSTOMER_MAX_CHARS = 100
BIGINT_MAX = 2**63 - 1
IDEMPOTENCY_KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ORDER_FIELDS = frozenset({"customer", "amount_cents"})
# Unicode categories a customer name may not contain: control characters
# (PostgreSQL text cannot hold NUL) and lone surrogates (not encodable).
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs"})


# --------------------------------------------------------------------------
# Values and errors
# --------------------------------------------------------------------------


class ApiError(Exception):
    """A request the app refuses; ``status`` is the HTTP status to answer."""

    def __init__(
        self, status: int, code: str, message: str, fields: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.fields:
            out["fields"] = self.fields
        return out


class DatabaseUnavailable(Exception):
    """The database could not run the operation now; trying again may work."""


@dataclass(frozen=True)
class NewOrder:
    """A validated order request."""

    idempotency_key: str
    customer: str
    amount_cents: int


@dataclass(frozen=True)
class Order:
    """A committed row of table ``orders``."""

    id: int
    idempotency_key: str
    customer: str
    amount_cents: int
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "customer": self.customer,
            "amount_cents": self.amount_cents,
            "created_at": iso_utc(self.created_at),
        }

    def same_request(self, new: NewOrder) -> bool:
        return self.customer == new.customer and self.amount_cents == new.amount_cents


@dataclass(frozen=True)
class Reply:
    """What a handler answers: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = field(default=())


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, microsecond precision."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def error_reply(err: ApiError, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(err.status, err.body(), headers)


def unavailable_reply(reason: str) -> Reply:
    return Reply(
        503,
        {"error": "database_unavailable", "message": reason},
        (("Retry-After", "1"),),
    )


# --------------------------------------------------------------------------
# Validation (pure)
# --------------------------------------------------------------------------


def parse_idempotency_key(value: str | None) -> str:
    """Return the key, or raise ApiError(400)."""
    if value is None or value == "":
        raise ApiError(400, "missing_idempotency_key", "the Idempotency-Key header is required")
    if not IDEMPOTENCY_KEY_RE.fullmatch(value):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
        )
    return value


def read_limited(
    read: Callable[[int], bytes], limit: int = MAX_BODY_BYTES, declared_length: int | None = None
) -> bytes:
    """Read a request body of at most ``limit`` bytes, else raise ApiError(413).

    ``declared_length`` (Content-Length) lets an oversize body be refused
    without reading it; a chunked body is read up to ``limit + 1`` bytes.
    """
    too_large = ApiError(413, "body_too_large", f"the request body is limited to {limit} bytes")
    if declared_length is not None and declared_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise too_large
    return b"".join(chunks)


# An oversize body up to this size is read and thrown away before the 413 goes
# out: a server that closes with request bytes unread makes the kernel reset the
# connection, and a client still sending sees a broken connection instead of
# the 413 (seen as an SSL EOF in the stack tests). Bigger bodies are not read.
DRAIN_MAX_BYTES = 1024 * 1024


def drain(read: Callable[[int], bytes], declared_length: int | None) -> None:
    """Read and discard what is left of a refused body, up to DRAIN_MAX_BYTES."""
    left = DRAIN_MAX_BYTES if declared_length is None else declared_length
    if left > DRAIN_MAX_BYTES:
        return
    while left > 0:
        chunk = read(min(left, 64 * 1024))
        if not chunk:
            return
        left -= len(chunk)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_order_body(body: bytes) -> tuple[str, int]:
    """Return (customer, amount_cents) from a JSON body, or raise ApiError.

    400 when the body is not JSON; 422 when it is JSON but not a valid order.
    """
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_order", "the request body must be a JSON object")

    problems: dict[str, str] = {}
    for name in sorted(set(data) - ORDER_FIELDS):
        problems[name] = "unknown field"

    customer = data.get("customer")
    if "customer" not in data:
        problems["customer"] = "required"
    elif not isinstance(customer, str):
        problems["customer"] = "must be a string"
    elif not 1 <= len(customer) <= CUSTOMER_MAX_CHARS:
        problems["customer"] = f"must be 1 to {CUSTOMER_MAX_CHARS} characters"
    elif customer.strip() == "":
        problems["customer"] = "must not be blank"
    elif any(unicodedata.category(ch) in FORBIDDEN_CATEGORIES for ch in customer):
        problems["customer"] = "must not contain control characters"

    amount = data.get("amount_cents")
    if "amount_cents" not in data:
        problems["amount_cents"] = "required"
    elif type(amount) is not int:  # bool is a subclass of int; 1.0 is a float
        problems["amount_cents"] = "must be an integer"
    elif amount < 0:
        problems["amount_cents"] = "must be >= 0"
    elif amount > BIGINT_MAX:
        problems["amount_cents"] = f"must be <= {BIGINT_MAX}"

    if problems:
        raise ApiError(422, "invalid_order", "the order is not valid", problems)
    assert isinstance(customer, str) and isinstance(amount, int)
    return customer, amount


def parse_new_order(key_header: str | None, body: bytes) -> NewOrder:
    """Validate a POST /orders request: the key first, then the body."""
    key = parse_idempotency_key(key_header)
    customer, amount = parse_order_body(body)
    return NewOrder(key, customer, amount)


# --------------------------------------------------------------------------
# Client tokens (pure)
# --------------------------------------------------------------------------

CLIENT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
TOKEN_DIGEST_RE = re.compile(r"sha256:([0-9a-f]{64})")
TOKEN_LINE = "'<client> sha256:<64 hex digits>'"  # noqa: S105 - a format, not a secret


class TokenConfigError(ValueError):
    """The client tokens cannot be used; the message is one line naming the file."""


def token_digest(token: str) -> bytes:
    """SHA-256 of a token. Tokens are long random strings (the vault's), so a
    fast hash is enough: there is no dictionary to try, and a slow hash
    (bcrypt) would cost tens of milliseconds on every request."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class ClientTokens:
    """The API's clients, each known by the SHA-256 digest of its token."""

    digests: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str, source: str) -> ClientTokens:
        """Read ``<client> sha256:<hex>`` lines (# comments and blank lines allowed)."""
        seen: dict[str, int] = {}
        by_digest: dict[bytes, str] = {}
        out: list[tuple[str, bytes]] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                raise TokenConfigError(f"{source} line {number}: expected {TOKEN_LINE}")
            name, value = fields
            if not CLIENT_NAME_RE.fullmatch(name):
                raise TokenConfigError(
                    f"{source} line {number}: client name {name[:70]!r} must be 1 to 63 "
                    "characters of a-z 0-9 . _ - (starting with a letter or digit)"
                )
            m = TOKEN_DIGEST_RE.fullmatch(value)
            if m is None:
                raise TokenConfigError(
                    f"{source} line {number}: client {name}: expected {TOKEN_LINE}, "
                    "the digest of the token, never the token itself"
                )
            if name in seen:
                raise TokenConfigError(
                    f"{source} line {number}: client {name} is already on line {seen[name]}"
                )
            digest = bytes.fromhex(m.group(1))
            if digest in by_digest:
                raise TokenConfigError(
                    f"{source} line {number}: client {name} has the same token as "
                    f"{by_digest[digest]}; every client needs its own"
                )
            seen[name] = number
            by_digest[digest] = name
            out.append((name, digest))
        if not out:
            raise TokenConfigError(
                f"{source} names no client: every request that needs a token would be refused"
            )
        return cls(tuple(out))

    @property
    def clients(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.digests)

    def client_for(self, token: str) -> str | None:
        """The client whose token this is, else None. Every client's digest is
        compared (constant time each), so the time taken does not depend on
        which one matches or how much of a digest does."""
        presented = token_digest(token)
        found: str | None = None
        for name, digest in self.digests:
            if hmac.compare_digest(presented, digest) and found is None:
                found = name
        return found


def load_tokens(path: str) -> ClientTokens:
    """Read the client tokens file; TokenConfigError (one line) when it cannot be used.

    A file that every user may read or write is refused: anyone on the web
    host could then swap in a digest of their own token.
    """
    try:
        # Checked before the open too: opening a FIFO would block the worker's boot.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise TokenConfigError(f"{path}: the client tokens file is not a regular file")
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o007:
                raise TokenConfigError(
                    f"{path} is accessible to every user (mode {stat.S_IMODE(mode):04o}); "
                    "it must not be (the ledger role installs it 0640 root:ledger)"
                )
            data = f.read(1024 * 1024)
    except OSError as exc:
        raise TokenConfigError(
            f"{path}: cannot read the client tokens file: {exc.strerror or exc}"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenConfigError(f"{path}: the client tokens file is not UTF-8 text") from None
    return ClientTokens.parse(text, path)


AUTH_CHALLENGE = (("WWW-Authenticate", 'Bearer realm="ledger"'),)


def authorize(header: str | None, tokens: ClientTokens) -> str:
    """The client an ``Authorization`` header proves, else ApiError (401 none, 403 wrong).

    The token itself never goes into an error, a log line or a metric.
    """
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(
            401, "missing_token", "this request needs an 'Authorization: Bearer <token>' header"
        )
    client = tokens.client_for(value.strip())
    if client is None:
        raise ApiError(403, "invalid_token", "the bearer token is not valid for this API")
    return client


def auth_refusal(header: str | None, tokens: ClientTokens) -> Reply | None:
    """None when the header proves a client, else the reply that refuses the request."""
    try:
        authorize(header, tokens)
    except ApiError as err:
        return error_reply(err, AUTH_CHALLENGE if err.status == 401 else ())
    return None


# --------------------------------------------------------------------------
# Store interface and request handlers
# --------------------------------------------------------------------------


class Store(Protocol):
    """The database as the handlers see it.

    Every method raises DatabaseUnavailable when the operation may succeed
    if tried again (connection lost, standby reached, timeout).
    """

    def insert_or_get(self, new: NewOrder) -> tuple[Order, bool]:
        """Insert unless the key exists; return (row, True if inserted).

        The row is committed when this returns.
        """
        ...

    def get(self, order_id: int) -> Order | None: ...

    def get_from_standby(self, order_id: int) -> Order | None:
        """Read the row on any db host that accepts a session (a standby).

        None proves nothing: a standby may lag behind the primary.
        """
        ...

    def check_writable(self) -> None:
        """Return if a write transaction on the primary succeeds now."""
        ...


Retry = Callable[[Callable[[], Reply]], Reply]


def run_once(fn: Callable[[], Reply]) -> Reply:
    return fn()


def create_order(new: NewOrder, store: Store) -> Reply:
    """Apply the idempotency rules to a validated order."""
    order, inserted = store.insert_or_get(new)
    location = (("Location", f"/orders/{order.id}"),)
    if inserted:
        return Reply(201, order.to_json(), location)
    if order.same_request(new):
        return Reply(200, order.to_json(), location + (("Idempotent-Replayed", "true"),))
    err = ApiError(
        409,
        "idempotency_key_reused",
        "this Idempotency-Key was used for a different order",
        {"idempotency_key": new.idempotency_key},
    )
    return error_reply(err)


def handle_create_order(
    key_header: str | None, body: bytes, store: Store, retry: Retry = run_once
) -> Reply:
    """POST /orders. Bad input never reaches the store."""
    try:
        new = parse_new_order(key_header, body)
    except ApiError as err:
        return error_reply(err)
    try:
        return retry(lambda: create_order(new, store))
    except DatabaseUnavailable as exc:
        return unavailable_reply(str(exc))


FROM_PRIMARY = ("X-Ledger-Source", "primary")
FROM_STANDBY = ("X-Ledger-Source", "standby")


def handle_get_order(
    order_id: int, store: Store, retry: Retry = run_once, *, standby_reads: bool = False
) -> Reply:
    """GET /orders/<id>.

    When the primary answers: 200 or 404. When it is unavailable and
    ``standby_reads`` is on, the same attempt reads on a standby. Rows are
    insert-only and never change, so a row found there equals the primary's
    and is the answer. A row not found there proves nothing (the standby may
    lag): the attempt fails as unavailable, the retry goes on, and the end
    of the budget is a 503, never a 404. POST never reads on a standby.
    """
    not_found = error_reply(ApiError(404, "not_found", f"no order {order_id}"))
    if not 0 < order_id <= BIGINT_MAX:
        return not_found

    def attempt() -> Reply:
        try:
            order = store.get(order_id)
        except DatabaseUnavailable as exc:
            if not standby_reads:
                raise
            try:
                order = store.get_from_standby(order_id)
            except DatabaseUnavailable as other:
                raise DatabaseUnavailable(f"{exc}; standby read: {other}") from other
            if order is None:
                raise DatabaseUnavailable(
                    f"{exc}; standby read: no order {order_id} there (it may lag)"
                ) from exc
            return Reply(200, order.to_json(), (FROM_STANDBY,))
        if order is None:
            return Reply(not_found.status, not_found.body, (FROM_PRIMARY,))
        return Reply(200, order.to_json(), (FROM_PRIMARY,))

    try:
        return retry(attempt)
    except DatabaseUnavailable as exc:
        return unavailable_reply(str(exc))


def handle_readiness(store: Store) -> Reply:
    """GET /readyz: a single attempt, no retry (HAProxy checks it often)."""
    try:
        store.check_writable()
    except DatabaseUnavailable as exc:
        return Reply(503, {"status": "unavailable", "reason": str(exc)})
    return Reply(200, {"status": "ready"})


def call_with_retry(
    fn: Callable[[], Reply],
    budget_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[DatabaseUnavailable], None] | None = None,
    first_delay_s: float = 0.05,
    max_delay_s: float = 0.25,
) -> Reply:
    """Call ``fn`` until it stops raising DatabaseUnavailable or ``budget_s`` is spent.

    Backoff doubles from ``first_delay_s`` up to ``max_delay_s`` and never
    sleeps past the deadline; one last attempt runs at the deadline. Safe for
    POST because the Idempotency-Key makes a replay return the first row.
    The cap is short so that a held write lands within a quarter second of a
    new primary; the connection gate (CONNECT_COOLDOWN_S) is what keeps the
    retrying threads from flooding the database hosts with connections.
    """
    deadline = clock() + budget_s
    delay = first_delay_s
    while True:
        try:
            return fn()
        except DatabaseUnavailable as exc:
            remaining = deadline - clock()
            if remaining <= 0:
                raise
            if on_retry is not None:
                on_retry(exc)
            sleep(min(delay, remaining))
            delay = min(delay * 2, max_delay_s)


# --------------------------------------------------------------------------
# PostgreSQL store (psycopg 3)
# --------------------------------------------------------------------------

# Whole literals, values only through placeholders (nothing is pasted into SQL).
# Each returns the columns Order is built from, in this order.
ORDER_COLUMNS = ("id", "idempotency_key", "customer", "amount_cents", "created_at")
INSERT_SQL = (
    "INSERT INTO orders (idempotency_key, customer, amount_cents) VALUES (%s, %s, %s) "
    "ON CONFLICT (idempotency_key) DO NOTHING "
    "RETURNING id, idempotency_key, customer, amount_cents, created_at"
)
SELECT_BY_KEY_SQL = (
    "SELECT id, idempotency_key, customer, amount_cents, created_at "
    "FROM orders WHERE idempotency_key = %s"
)
SELECT_BY_ID_SQL = (
    "SELECT id, idempotency_key, customer, amount_cents, created_at FROM orders WHERE id = %s"
)
# SQLSTATEs worth a reconnect that psycopg does not class as OperationalError:
# 25006 read_only_sql_transaction (the session landed on a standby).
RECONNECT_SQLSTATES = frozenset({"25006"})

# After every database host refused or failed a connection, nobody in this
# process tries again for this long (the request retry loop backs off anyway).
# It bounds how soon a held request finds a new primary; 0.15 s keeps the
# connects of a 2-process web host to about 13 rounds a second in an outage.
CONNECT_COOLDOWN_S = 0.15
# libpq's words when a target_session_attrs=read-write attempt reached a
# standby (libpq 14 and later; older versions: "could not make a writable
# connection"). Such a host answered, fast: it is not a failed host. Python
# never sets LC_MESSAGES from the environment, so libpq speaks English here.
READ_ONLY_REFUSALS = ("session is read-only", "could not make a writable connection")
# connect_timeout of the standby-read connections: libpq's minimum.
READ_CONNECT_TIMEOUT_S = 2


def host_attempts(params: Mapping[str, Any], make_conninfo: Callable[..., str]) -> list[str]:
    """Split a libpq multi-host conninfo into one conninfo per host (same options)."""
    hosts = str(params.get("host") or "").split(",")
    ports = str(params.get("port") or "").split(",")
    out = []
    for i, host in enumerate(hosts):
        one = dict(params)
        one["host"] = host.strip()
        if ports != [""]:
            one["port"] = (ports[i] if len(ports) > 1 else ports[0]).strip()
        out.append(make_conninfo(**one))
    return out


def read_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The standby-read conninfo: the DSN's hosts, password source and TLS
    settings, but any host that accepts a session will do."""
    return {
        **params,
        "target_session_attrs": "any",
        "connect_timeout": str(READ_CONNECT_TIMEOUT_S),
    }


class FailedHosts:
    """The db hosts whose last connection attempt failed (timeout,
    unreachable, refused), oldest failure first. Shared by a process's
    read-write and read connections; a host that answers, even as a standby,
    leaves the list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: list[int] = []

    def failed(self, host: int) -> None:
        with self._lock:
            if host in self._hosts:
                self._hosts.remove(host)
            self._hosts.append(host)

    def answered(self, host: int) -> None:
        with self._lock:
            if host in self._hosts:
                self._hosts.remove(host)

    def order(self, count: int, first: int | None = None, avoid: int | None = None) -> list[int]:
        """Hosts ``0..count-1`` in the order to try them: ``first`` (unless it
        failed since), the other hosts without a failure in inventory order
        (``avoid`` the last of them), then the failed hosts, oldest first."""
        with self._lock:
            failed = list(self._hosts)
        healthy = [i for i in range(count) if i not in failed]
        return sorted(healthy, key=lambda i: (i == avoid, i != first)) + failed


class Connector:
    """One connection per thread to the first db host that accepts a session.

    The hosts are tried one by one here rather than by libpq: with psycopg 3.1
    and libpq 15 an unreachable host in a multi-host string (EHOSTUNREACH, a
    powered-off primary) ends the whole attempt instead of moving on to the
    next host. The order (``FailedHosts.order``) puts the host that last
    accepted first and the hosts that failed last, so right after a failover
    a new connection does not wait out connect_timeout on the dead former
    primary first.
    """

    def __init__(self, psycopg: Any, attempts: list[str], failed: FailedHosts, what: str) -> None:
        self._psycopg = psycopg
        self._attempts = attempts  # one conninfo per host, in inventory order
        self._failed = failed
        self._what = what  # "read-write" or "readable", for messages
        self.last_good: int | None = None  # the host that last accepted a session
        # Connection gate (see _connect): one connect at a time per process,
        # and none for CONNECT_COOLDOWN_S after every host failed.
        self._gate = threading.Lock()
        self._failed_at = float("-inf")
        self._failure = ""
        self._local = threading.local()

    def connection(self, avoid: int | None = None) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect(avoid)
            self._local.conn = conn
        return conn

    def drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(Exception):  # closing a broken connection may fail
                conn.close()

    def _connect(self, avoid: int | None) -> Any:
        with self._gate:
            # While the database is down, every request thread of every worker
            # would otherwise open TLS + SCRAM sessions to every host in a
            # tight loop: a thundering herd that starves the machine the
            # failover itself runs on. One thread tries; the others wait for
            # it, and after a complete failure nobody tries for a moment.
            since = time.monotonic() - self._failed_at
            if since < CONNECT_COOLDOWN_S:
                raise self._psycopg.OperationalError(
                    f"every database host failed {since:.2f}s ago: {self._failure}"
                )
            errors = []
            for i in self._failed.order(len(self._attempts), self.last_good, avoid):
                try:
                    conn = self._psycopg.connect(self._attempts[i], autocommit=True)
                except self._psycopg.OperationalError as exc:
                    lines = str(exc).strip().splitlines()
                    errors.append(lines[0] if lines else repr(exc))
                    if any(words in str(exc) for words in READ_ONLY_REFUSALS):
                        self._failed.answered(i)  # a standby: it answered
                    else:
                        self._failed.failed(i)
                    if self.last_good == i:
                        self.last_good = None
                    continue
                self._failed.answered(i)
                self.last_good = i
                return conn
            self._failed_at = time.monotonic()
            self._failure = "; ".join(errors)
            raise self._psycopg.OperationalError(f"no {self._what} database host: " + self._failure)


class PgStore:
    """Store on PostgreSQL, one connection per thread.

    The connection string is a libpq multi-host string with
    ``target_session_attrs=read-write``; a fresh connection tries its hosts
    one by one (``Connector``) and so finds the current primary. Any error
    drops the thread's connection; the next call connects again.

    ``get_from_standby`` reads on a second connection per thread, to any db
    host that accepts a session (the same hosts, ``target_session_attrs=any``),
    with its own gate and cool-down; it is open only while the primary is
    unavailable (a read on the primary closes it).

    ``statement_timeout_ms`` bounds each statement but is lifted before
    COMMIT: PostgreSQL answers a cancelled wait for synchronous replication
    with a warning and a *successful* commit, which would acknowledge a row
    that exists on one host only.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        statement_timeout_ms: int = 5000,
        ready_timeout_ms: int = 500,
        on_error: Callable[[str, Exception], None] | None = None,
    ) -> None:
        import psycopg  # deferred: unit tests run without it
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        self._psycopg = psycopg
        params = conninfo_to_dict(conninfo)
        options = params.get("options") or ""
        params["options"] = f"{options} -c statement_timeout={int(statement_timeout_ms)}".strip()
        failed = FailedHosts()
        primary = host_attempts(params, make_conninfo)
        self._primary = Connector(psycopg, primary, failed, "read-write")
        reads = host_attempts(read_params(params), make_conninfo)
        self._reader = Connector(psycopg, reads, failed, "readable")
        self._ready_timeout_ms = int(ready_timeout_ms)
        self._on_error = on_error

    def _transient(self, exc: Exception) -> bool:
        errors = self._psycopg
        if isinstance(exc, (errors.OperationalError, errors.InterfaceError)):
            return True
        return getattr(exc, "sqlstate", None) in RECONNECT_SQLSTATES

    @contextmanager
    def _transaction(
        self, operation: str, *, force_rollback: bool = False, standby: bool = False
    ) -> Iterator[Any]:
        connector = self._reader if standby else self._primary
        try:
            # A standby read goes to another host than the one the primary
            # connection last used: that one has most likely just failed.
            conn = connector.connection(avoid=self._primary.last_good if standby else None)
            with conn.transaction(force_rollback=force_rollback), conn.cursor() as cur:
                yield cur
        except self._psycopg.Error as exc:
            connector.drop()
            if self._on_error is not None:
                self._on_error(operation, exc)
            if self._transient(exc):
                raise DatabaseUnavailable(f"{operation}: {exc}".strip()) from exc
            raise
        if not standby:
            self._reader.drop()  # the primary answers: no read connection needed

    @staticmethod
    def _order(row: tuple[Any, ...]) -> Order:
        return Order(int(row[0]), row[1], row[2], int(row[3]), row[4])

    def insert_or_get(self, new: NewOrder) -> tuple[Order, bool]:
        with self._transaction("insert") as cur:
            cur.execute(INSERT_SQL, (new.idempotency_key, new.customer, new.amount_cents))
            row = cur.fetchone()
            inserted = row is not None
            if row is None:
                # Another transaction holds the key; ON CONFLICT waited for it
                # to commit, and this statement's snapshot sees its row.
                cur.execute(SELECT_BY_KEY_SQL, (new.idempotency_key,))
                row = cur.fetchone()
            # No timeout on COMMIT (see the class docstring).
            cur.execute("SET LOCAL statement_timeout = 0")
        if row is None:  # the conflicting transaction rolled back: try again
            raise DatabaseUnavailable("insert: concurrent request with this key rolled back")
        return self._order(row), inserted

    def get(self, order_id: int) -> Order | None:
        with self._transaction("get") as cur:
            cur.execute(SELECT_BY_ID_SQL, (order_id,))
            row = cur.fetchone()
        return None if row is None else self._order(row)

    def get_from_standby(self, order_id: int) -> Order | None:
        # Rows are insert-only and never change, so a row found on a standby
        # equals the primary's. None proves nothing (the standby may lag);
        # handle_get_order never turns it into a 404.
        with self._transaction("get_standby", standby=True) as cur:
            cur.execute(SELECT_BY_ID_SQL, (order_id,))
            row = cur.fetchone()
        return None if row is None else self._order(row)

    def check_writable(self) -> None:
        with self._transaction("ready", force_rollback=True) as cur:
            cur.execute(f"SET LOCAL statement_timeout = {self._ready_timeout_ms}")
            cur.execute("SELECT pg_is_in_recovery()")
            (in_recovery,) = cur.fetchone()
            if not in_recovery:
                # Assigning a transaction id fails on a read-only session and
                # near wraparound; the rollback writes nothing that must wait
                # for a synchronous standby.
                cur.execute("SELECT txid_current()")
        if in_recovery:
            self._primary.drop()
            raise DatabaseUnavailable("ready: connected to a server in recovery")


# --------------------------------------------------------------------------
# Flask application
# --------------------------------------------------------------------------


FLAG_WORDS = dict.fromkeys(("1", "true", "yes", "on"), True) | dict.fromkeys(
    ("0", "false", "no", "off"), False
)


def parse_flag(name: str, value: str | None, default: bool) -> bool:
    """An on/off environment variable; unset or empty is ``default``."""
    if value is None or value.strip() == "":
        return default
    try:
        return FLAG_WORDS[value.strip().lower()]
    except KeyError:
        raise ValueError(f"{name} must be on or off, not {value!r}") from None


@dataclass(frozen=True)
class Settings:
    """Runtime settings, from ``LEDGER_*`` environment variables."""

    dsn: str = ""
    retry_seconds: float = 8.0
    statement_timeout_ms: int = 5000
    ready_timeout_ms: int = 500
    standby_reads: bool = True
    tokens_file: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            dsn=env.get("LEDGER_DSN", ""),
            tokens_file=env.get("LEDGER_TOKENS_FILE", ""),
            retry_seconds=float(env.get("LEDGER_DB_RETRY_SECONDS", cls.retry_seconds)),
            statement_timeout_ms=int(
                env.get("LEDGER_STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms)
            ),
            ready_timeout_ms=int(env.get("LEDGER_READY_TIMEOUT_MS", cls.ready_timeout_ms)),
            standby_reads=parse_flag(
                "LEDGER_STANDBY_READS", env.get("LEDGER_STANDBY_READS"), cls.standby_reads
            ),
        )


class Metrics:
    """Prometheus metrics. Under gunicorn the systemd unit sets
    PROMETHEUS_MULTIPROC_DIR, so every worker writes its samples there and
    /metrics sums all workers, whichever worker answers the scrape."""

    def __init__(self) -> None:
        import prometheus_client as prom
        from prometheus_client import multiprocess

        self._prom = prom
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if self.multiprocess_dir:
            # Values go to files in the directory; exposition reads them all.
            self.registry = prom.CollectorRegistry()
            multiprocess.MultiProcessCollector(self.registry)
            metric_registry = None
        else:
            self.registry = prom.CollectorRegistry()
            metric_registry = self.registry
        self.requests = prom.Counter(
            "ledger_http_requests_total",
            "HTTP requests answered, by route, method and status.",
            ["endpoint", "method", "status"],
            registry=metric_registry,
        )
        self.latency = prom.Histogram(
            "ledger_http_request_duration_seconds",
            "Time to answer an HTTP request, by route and method.",
            ["endpoint", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
            registry=metric_registry,
        )
        self.db_errors = prom.Counter(
            "ledger_db_errors_total",
            "Database errors (each drops the thread's connection), by operation.",
            ["operation"],
            registry=metric_registry,
        )
        self.db_retries = prom.Counter(
            "ledger_db_retries_total",
            "Retries of a request because the database was unavailable.",
            registry=metric_registry,
        )
        self.standby_reads = prom.Counter(
            "ledger_standby_reads_total",
            "GET /orders/<id> answered with a row read on a standby (the primary unavailable).",
            registry=metric_registry,
        )
        self.auth_refused = prom.Counter(
            "ledger_auth_refused_total",
            "/orders requests refused for their bearer token: missing_token (401), "
            "invalid_token (403).",
            ["reason"],
            registry=metric_registry,
        )
        self.orders = prom.Counter(
            "ledger_orders_total",
            "POST /orders outcomes: created, replayed (same key and body), conflict.",
            ["result"],
            registry=metric_registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


ORDER_RESULTS = {201: "created", 200: "replayed", 409: "conflict"}


# gunicorn halts (no respawn loop) when a worker exits with this code while it boots.
WORKER_BOOT_ERROR = 3


def startup_tokens(settings: Settings) -> ClientTokens:
    """The client tokens, or one error line in the log and exit WORKER_BOOT_ERROR."""
    try:
        if not settings.tokens_file:
            raise TokenConfigError(
                "LEDGER_TOKENS_FILE is not set: without client tokens every /orders "
                "request would be refused"
            )
        return load_tokens(settings.tokens_file)
    except TokenConfigError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(WORKER_BOOT_ERROR) from None


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    tokens: ClientTokens | None = None,
) -> Any:
    """Build the Flask app; gunicorn calls this in each worker.

    ``tokens`` defaults to the file ``settings.tokens_file`` names; a missing
    or unusable file stops the worker with one log line (``startup_tokens``).
    """
    from flask import Flask, Response, g, request
    from werkzeug.exceptions import HTTPException

    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    settings = settings or Settings.from_env(os.environ)
    if tokens is None:
        tokens = startup_tokens(settings)
    metrics = Metrics()

    def db_error(operation: str, exc: Exception) -> None:
        metrics.db_errors.labels(operation).inc()
        log.warning("database error during %s: %s", operation, str(exc).strip())

    if store is None:
        if not settings.dsn:
            raise RuntimeError("LEDGER_DSN is not set")
        store = PgStore(
            settings.dsn,
            statement_timeout_ms=settings.statement_timeout_ms,
            ready_timeout_ms=settings.ready_timeout_ms,
            on_error=db_error,
        )

    def retry(fn: Callable[[], Reply]) -> Reply:
        return call_with_retry(
            fn, settings.retry_seconds, on_retry=lambda _exc: metrics.db_retries.inc()
        )

    app = Flask("ledger")
    # Werkzeug refuses a larger Content-Length with 413 before the view runs;
    # read_limited() covers chunked bodies.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def render(reply: Reply) -> Any:
        resp = Response(json.dumps(reply.body), status=reply.status, mimetype="application/json")
        for name, value in reply.headers:
            resp.headers[name] = value
        return resp

    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def record(resp: Any) -> Any:
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(endpoint, request.method, str(resp.status_code)).inc()
        started = getattr(g, "started", None)
        if started is not None:
            metrics.latency.labels(endpoint, request.method).observe(time.perf_counter() - started)
        return resp

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        headers: tuple[tuple[str, str], ...] = ()
        if code == 413:
            headers = (("Connection", "close"),)  # do not drain a huge body
        name = (exc.name or "error").lower().replace(" ", "_")
        return render(Reply(code, {"error": name, "message": exc.description or ""}, headers))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.error("unhandled error: %s", exc, exc_info=exc)
        return render(Reply(500, {"error": "internal_error", "message": "internal error"}))

    def refused(drain_body: bool) -> Any | None:
        reply = auth_refusal(request.headers.get("Authorization"), tokens)
        if reply is None:
            return None
        metrics.auth_refused.labels(reply.body["error"]).inc()
        if drain_body:
            # Read what is left of the body (up to DRAIN_MAX_BYTES) so that
            # the refusal reaches a client that is still sending.
            drain(request.stream.read, request.content_length)
        return render(reply)

    @app.post("/orders")
    def post_orders() -> Any:
        refusal = refused(drain_body=True)
        if refusal is not None:
            return refusal
        try:
            body = read_limited(request.stream.read, MAX_BODY_BYTES, request.content_length)
        except ApiError as err:
            drain(request.stream.read, request.content_length)
            return render(error_reply(err, (("Connection", "close"),)))
        reply = handle_create_order(request.headers.get("Idempotency-Key"), body, store, retry)
        result = ORDER_RESULTS.get(reply.status)
        if result is not None:
            metrics.orders.labels(result).inc()
        return render(reply)

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int) -> Any:
        refusal = refused(drain_body=False)
        if refusal is not None:
            return refusal
        reply = handle_get_order(order_id, store, retry, standby_reads=settings.standby_reads)
        if FROM_STANDBY in reply.headers:
            metrics.standby_reads.inc()
        return render(reply)

    @app.get("/healthz")
    def healthz() -> Any:
        return render(Reply(200, {"status": "alive"}))

    @app.get("/readyz")
    def readyz() -> Any:
        return render(handle_readiness(store))

    @app.get("/metrics")
    def prometheus_metrics() -> Any:
        data, content_type = metrics.exposition()
        return Response(data, status=200, content_type=content_type)

    return app


def main(argv: list[str]) -> int:
    """``python3 ledger.py check-tokens FILE``: check a client tokens file, print its clients."""
    if len(argv) != 2 or argv[0] != "check-tokens":
        print("usage: ledger.py check-tokens FILE", file=sys.stderr)
        return 2
    try:
        tokens = load_tokens(argv[1])
    except TokenConfigError as exc:
        print(f"ledger: {exc}", file=sys.stderr)
        return 1
    print(f"{argv[1]}: {len(tokens.clients)} clients: {', '.join(tokens.clients)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
