"""Steady client load on the ledger API through the VIP, recorded request by request.

``Traffic`` is an open-loop load generator: request ``i`` is due at
``start + i / rps`` whatever happened to the earlier ones, so an outage shows
up as failed or slow requests, not as a lower request rate. A scheduler
thread hands due requests to a pool of at most ``max_in_flight`` worker
threads, each with its own keep-alive ``requests.Session``. When all workers
are busy a due request is not sent; it is recorded as failed with error
"client saturated". Nothing is sent ``duration_s`` after the start, and no
more than ``ceil(rps * duration_s)`` requests are due; the traffic stops by
itself. All threads are daemons.

Request mix: a fraction ``post_ratio`` of requests (spread evenly over the
sequence) are ``POST /orders`` with a fresh uuid4 ``Idempotency-Key`` and a
random amount; the rest are ``GET /orders/<id>`` of an id acknowledged
earlier (a POST while none has been acknowledged yet).

Records (one row per request, sorted by ``sent_at``)
    seq              int, the request's index in the schedule
    kind             "POST" | "GET"
    sent_at          when it was sent (for a saturated request: when it was due)
    answered_at      when the answer, error or timeout came back
    latency_ms       float (NaN for a request that was not sent)
    status           int HTTP status, 0 when there was no HTTP answer
    ok               POST: 200/201 with an integer ``id`` in the body; GET: 200
    order_id         Int64: the id in a POST's answer, the id a GET asked for
    idempotency_key  str ("" for GET)
    error            str, "" when ok: "HTTP 503", "timeout", "client saturated",
                     "ConnectionError: [Errno 111] Connection refused", ...

Times are ``datetime64[ns, UTC]``. ``save``/``load_records`` round-trip the
records through CSV (or parquet when the path ends in .parquet and pyarrow is
installed).
"""

from __future__ import annotations

import itertools
import logging
import math
import queue
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import requests

from faultbook.errors import ParameterError, UsageError
from faultbook.inventory import Inventory
from faultbook.stack import http

log = logging.getLogger(__name__)

TS_DTYPE = "datetime64[ns, UTC]"
DTYPES: dict[str, str] = {
    "seq": "int64",
    "kind": "str",
    "sent_at": TS_DTYPE,
    "answered_at": TS_DTYPE,
    "latency_ms": "float64",
    "status": "int64",
    "ok": "bool",
    "order_id": "Int64",
    "idempotency_key": "str",
    "error": "str",
}
COLUMNS = tuple(DTYPES)
SATURATED = "client saturated"
MAX_AMOUNT_CENTS = 100_000
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")
_ids = itertools.count(1)


@dataclass(frozen=True)
class LoadSpec:
    """What load to put on the stack. Invalid values raise ParameterError."""

    rps: float = 20.0
    duration_s: float = 60.0
    post_ratio: float = 0.5
    timeout_s: float = 10.0
    max_in_flight: int = 64
    customer: str = "drill"

    def __post_init__(self) -> None:
        def bad(field: str, value: object, expected: str) -> ParameterError:
            return ParameterError(f"LoadSpec.{field}={value!r} is invalid: expected {expected}")

        def number(v: object) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        if not (number(self.rps) and 0 < self.rps <= 1000):
            raise bad("rps", self.rps, "requests per second > 0 and <= 1000")
        if not (number(self.duration_s) and 0 < self.duration_s <= 3600):
            raise bad("duration_s", self.duration_s, "seconds > 0 and <= 3600")
        if not (number(self.post_ratio) and 0 <= self.post_ratio <= 1):
            raise bad("post_ratio", self.post_ratio, "a fraction between 0 and 1")
        if not (number(self.timeout_s) and self.timeout_s > 0):
            raise bad("timeout_s", self.timeout_s, "seconds > 0")
        if not (
            isinstance(self.max_in_flight, int)
            and not isinstance(self.max_in_flight, bool)
            and self.max_in_flight >= 1
        ):
            raise bad("max_in_flight", self.max_in_flight, "an integer >= 1")
        if not (
            isinstance(self.customer, str)
            and 1 <= len(self.customer) <= 100
            and self.customer.strip()
        ):
            raise bad("customer", self.customer, "a non-blank string of 1 to 100 characters")

    @property
    def total_requests(self) -> int:
        """How many requests the schedule holds: ceil(rps * duration_s)."""
        return math.ceil(round(self.rps * self.duration_s, 9))

    def is_post(self, seq: int) -> bool:
        """Whether request ``seq`` is a POST: ``post_ratio`` of them, spread evenly."""
        return math.floor((seq + 1) * self.post_ratio) > math.floor(seq * self.post_ratio)


@dataclass(frozen=True)
class _Job:
    seq: int
    kind: str
    order_id: int | None


def _short_error(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timeout"
    text = str(exc)
    m = _ERRNO.search(text)
    msg = m.group(0).strip() if m else " ".join(text.split())
    if len(msg) > 160:
        msg = msg[:159] + "…"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return normalize_records(df)


def normalize_records(df: pd.DataFrame) -> pd.DataFrame:
    """Give a records frame the documented dtypes, sorted by sent_at (then seq)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ParameterError(f"records lack column(s) {', '.join(missing)}")
    out = pd.DataFrame(index=range(len(df)))
    src = df.reset_index(drop=True)
    out["seq"] = pd.to_numeric(src["seq"]).astype("int64")
    out["kind"] = src["kind"].astype(str)
    for col in ("sent_at", "answered_at"):
        out[col] = pd.Series(pd.to_datetime(src[col], utc=True, format="ISO8601"), dtype=TS_DTYPE)
    out["latency_ms"] = pd.to_numeric(src["latency_ms"]).astype("float64")
    out["status"] = pd.to_numeric(src["status"]).fillna(0).astype("int64")
    ok = src["ok"]
    if ok.dtype == object or str(ok.dtype) in ("str", "string"):
        ok = ok.astype(str).str.lower().isin(["true", "1"])
    out["ok"] = ok.fillna(False).astype(bool)
    out["order_id"] = pd.to_numeric(src["order_id"]).astype("Int64")
    for col in ("idempotency_key", "error"):
        out[col] = src[col].fillna("").astype(str)
    return out.sort_values(["sent_at", "seq"], kind="stable").reset_index(drop=True)


def load_records(path: str | Path) -> pd.DataFrame:
    """Read records written by ``Traffic.save`` with their dtypes restored."""
    p = Path(path)
    if p.suffix == ".parquet":
        df = pd.read_parquet(p)
    else:
        df = pd.read_csv(
            p,
            dtype={"kind": "str", "idempotency_key": "str", "error": "str", "order_id": "Int64"},
            keep_default_na=False,
            na_values={"latency_ms": [""], "order_id": [""], "answered_at": [""]},
        )
    return normalize_records(df)


def save_records(records: pd.DataFrame, path: str | Path) -> Path:
    """Write records to CSV, or parquet when ``path`` ends in .parquet and pyarrow is there.

    Without a parquet engine the file gets a .csv suffix instead; the path
    actually written is returned.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    df = normalize_records(records)
    if p.suffix == ".parquet":
        try:
            df.to_parquet(p, index=False)
            return p
        except ImportError:
            p = p.with_suffix(".csv")
            log.warning("no parquet engine installed; writing %s instead", p)
    out = df.copy()
    for col in ("sent_at", "answered_at"):
        out[col] = out[col].map(lambda t: "" if pd.isna(t) else t.isoformat())
    out.to_csv(p, index=False)
    return p


class Traffic:
    """Open-loop load on the ledger API; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        spec: LoadSpec,
        session_factory: Callable[[], requests.Session] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.spec = spec
        self._session_factory = session_factory or http.session
        self._name = f"faultbook-traffic-{next(_ids)}"
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._rows: list[dict[str, Any]] = []
        self._acked: list[int] = []
        self._acked_set: set[int] = set()
        self._workers: list[threading.Thread] = []
        self._in_flight = 0
        self._scheduling = False
        self._finished = False
        self._scheduler: threading.Thread | None = None
        self._started_at: datetime | None = None
        self._start_mono = 0.0

    @classmethod
    def for_inventory(cls, inv: Inventory, spec: LoadSpec) -> Traffic:
        """Traffic through the inventory's VIP over HTTPS, TLS checked against the stack CA,
        each request with the library's ledger token (``http.ledger_session``)."""
        token = http.ledger_token(inv)  # read once: a missing token stops the drill here
        vip = str(inv.vars["vip"])

        def factory() -> requests.Session:
            s = http.session(inv)
            s.auth = http.BearerAuth(token, vip)
            return s

        return cls(http.vip_url(inv, ""), spec, session_factory=factory)

    # -- life cycle ---------------------------------------------------------

    def start(self) -> Traffic:
        with self._lock:
            if self._scheduler is not None:
                raise UsageError("this Traffic was already started; make a new one")
            self._start_mono = time.monotonic()
            self._started_at = datetime.now(UTC)
            self._scheduling = True
            self._scheduler = threading.Thread(
                target=self._schedule, name=f"{self._name}-scheduler", daemon=True
            )
        log.info(
            "traffic to %s: %g req/s for %g s, %d%% POST, timeout %g s, at most %d in flight",
            self.base_url,
            self.spec.rps,
            self.spec.duration_s,
            round(self.spec.post_ratio * 100),
            self.spec.timeout_s,
            self.spec.max_in_flight,
        )
        self._scheduler.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Send nothing more; wait for in-flight requests (at most ``timeout``,
        default ``spec.timeout_s + 1``)."""
        self._stop.set()
        if self._scheduler is None:
            return
        bound = self.spec.timeout_s + 1 if timeout is None else timeout
        deadline = time.monotonic() + bound
        self._scheduler.join(max(0.0, deadline - time.monotonic()))
        if not self._wait_done(deadline):
            with self._lock:
                n = self._in_flight
            log.warning("traffic stopped with %d request(s) still unanswered after %g s", n, bound)

    def wait(self) -> None:
        """Block until the schedule is over and every request sent has been answered."""
        if self._scheduler is None:
            raise UsageError("traffic was not started")
        self._wait_done(None)

    def _wait_done(self, deadline: float | None) -> bool:
        with self._changed:
            while not self._finished:
                if deadline is None:
                    self._changed.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._changed.wait(remaining)
            return True

    @property
    def running(self) -> bool:
        """True from ``start`` until sending has ended and every request is answered."""
        with self._lock:
            return self._scheduler is not None and not self._finished

    @property
    def started_at(self) -> datetime | None:
        return self._started_at

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- results ------------------------------------------------------------

    def records(self) -> pd.DataFrame:
        """A snapshot of every request recorded so far, sorted by sent_at."""
        with self._lock:
            rows = list(self._rows)
        return _frame(rows)

    def acked_ids(self) -> set[int]:
        """Ids of orders the ledger acknowledged (POST answered 200/201 with an id)."""
        with self._lock:
            return set(self._acked_set)

    def save(self, path: str | Path) -> Path:
        """Write the records (see ``save_records``); return the path written."""
        return save_records(self.records(), path)

    load_records = staticmethod(load_records)

    # -- threads ------------------------------------------------------------

    def _schedule(self) -> None:
        spec = self.spec
        try:
            for seq in range(spec.total_requests):
                delay = self._start_mono + seq / spec.rps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                if self._stop.is_set() or time.monotonic() - self._start_mono >= spec.duration_s:
                    break
                self._dispatch(seq)
        except Exception:  # pragma: no cover - a bug; never leave wait() hanging
            log.exception("traffic scheduler failed")
        finally:
            with self._lock:
                self._scheduling = False
                self._maybe_finish()
            log.info("traffic: schedule over")

    def _dispatch(self, seq: int) -> None:
        with self._lock:
            if self.spec.is_post(seq) or not self._acked:
                job = _Job(seq, "POST", None)
            else:
                job = _Job(seq, "GET", self._rng.choice(self._acked))
            if self._in_flight >= self.spec.max_in_flight:
                now = datetime.now(UTC)
                self._rows.append(
                    self._row(job, now, now, math.nan, 0, False, job.order_id, "", SATURATED)
                )
                return
            self._in_flight += 1
            if len(self._workers) < self._in_flight:
                w = threading.Thread(
                    target=self._work,
                    name=f"{self._name}-worker-{len(self._workers)}",
                    daemon=True,
                )
                self._workers.append(w)
                w.start()
        self._jobs.put(job)

    def _work(self) -> None:
        session: requests.Session | None = None
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if session is None:
                    try:
                        session = self._session_factory()
                    except Exception as exc:  # noqa: BLE001 - any failure is a failed request, recorded
                        now = datetime.now(UTC)
                        row = self._row(
                            job, now, now, math.nan, 0, False, job.order_id, "", _short_error(exc)
                        )
                        self._record(row, None)
                        continue
                row, acked = self._send(session, job)
                self._record(row, acked)
        finally:
            if session is not None:
                session.close()

    def _record(self, row: dict[str, Any], acked: int | None) -> None:
        with self._lock:
            self._rows.append(row)
            if acked is not None and acked not in self._acked_set:
                self._acked_set.add(acked)
                self._acked.append(acked)
            self._in_flight -= 1
            self._maybe_finish()

    def _maybe_finish(self) -> None:
        """With the lock held: when nothing is left to send or answer, end the workers."""
        if self._scheduling or self._in_flight > 0 or self._finished:
            return
        self._finished = True
        for _ in self._workers:
            self._jobs.put(None)
        self._changed.notify_all()

    def _send(self, session: requests.Session, job: _Job) -> tuple[dict[str, Any], int | None]:
        key = ""
        if job.kind == "POST":
            key = str(uuid.uuid4())
            body = {"customer": self.spec.customer, "amount_cents": self._amount()}
            kwargs: dict[str, Any] = {"json": body, "headers": {"Idempotency-Key": key}}
            method, url = "POST", f"{self.base_url}/orders"
        else:
            kwargs = {}
            method, url = "GET", f"{self.base_url}/orders/{job.order_id}"
        sent_at = datetime.now(UTC)
        t0 = time.perf_counter()
        status = 0
        order_id = job.order_id
        acked: int | None = None
        try:
            r = session.request(method, url, timeout=self.spec.timeout_s, **kwargs)
            status = r.status_code
            if job.kind == "GET":
                error = "" if status == 200 else f"HTTP {status}"
            elif status in (200, 201):
                new_id = _body_id(r)
                if new_id is None:
                    error = f"HTTP {status} without an integer id in the body"
                else:
                    order_id = acked = new_id
                    error = ""
            else:
                error = f"HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - whatever the client saw fail is recorded as such
            error = _short_error(exc)
        elapsed = time.perf_counter() - t0
        answered_at = sent_at + timedelta(seconds=elapsed)
        row = self._row(
            job, sent_at, answered_at, elapsed * 1000, status, not error, order_id, key, error
        )
        return row, acked

    def _amount(self) -> int:
        with self._lock:
            return self._rng.randint(1, MAX_AMOUNT_CENTS)

    @staticmethod
    def _row(
        job: _Job,
        sent_at: datetime,
        answered_at: datetime,
        latency_ms: float,
        status: int,
        ok: bool,
        order_id: int | None,
        key: str,
        error: str,
    ) -> dict[str, Any]:
        return {
            "seq": job.seq,
            "kind": job.kind,
            "sent_at": sent_at,
            "answered_at": answered_at,
            "latency_ms": latency_ms,
            "status": status,
            "ok": ok,
            "order_id": order_id,
            "idempotency_key": key,
            "error": error,
        }


def _body_id(r: requests.Response) -> int | None:
    try:
        body = r.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        value = body.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
