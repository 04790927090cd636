"""The door: overload is refused before it costs anything, so the workers keep their pace.

A create (`POST /jobs`, `POST /jobs/bulk`) is refused at the door, before its body is
read or anything touches the database, with 429 + Retry-After (503 while the database is
down) when the door is overloaded and its caller holds more than its fair share of the
creates in flight (server/fairshare.py). Overloaded means:
- `max_creates_in_flight` creates are already being handled;
- or the event loop runs late by more than `shed_lag_s` (the process is saturated: every
  request admitted now would wait behind the others, and the group commits behind them).
A caller is a configured bearer token, so one tenant's flood is shed while a quiet tenant
beside it still gets through; with no tokens configured every request is the same caller
and everything is shed alike. The decision reads a few numbers kept up to date by
background tasks (the lag probe, the database monitor) and a digest of the token, so a
refusal costs a few microseconds of Python: under a flood the door answers at the rate
requests arrive, and what it lets in is what the database and the workers can take.

The queue depth (MAX_QUEUE_DEPTH, per queue) is checked once the body names the queue
(DbMonitor.admit, before anything is written). The door refuses before the body a token
whose every queue a recent real count found full (429 `queue_full`): a flooding
tenant's uploads into its full queue then cost no read and no validation, which would
take CPU from everyone else. While some queue is full, it also reads a single create's
`queue` itself and refuses there (server/peek.py): that is how a caller allowed every
queue is refused cheaply. Reads and everything else pass; they are cheap next to
creates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Protocol

import msgspec
from starlette.types import ASGIApp, Receive, Scope, Send

from boundq.server.backpressure import DbMonitor
from boundq.server.fairshare import CreateShares
from boundq.server.metrics import ApiMetrics
from boundq.server.options import ApiOptions
from boundq.server.peek import read_queue

CREATE_PATHS = frozenset({"/jobs", "/jobs/bulk"})
_encoder = msgspec.json.Encoder()


class LagProbe:
    """How late the event loop runs: a task asks to wake every `interval_s` and records how
    much later than asked it woke, as a moving average over about ten ticks (~100 ms): a
    process that stays saturated crosses the threshold within a tenth of a second, and a
    single scheduling hiccup on a busy machine does not shed anything."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            asked = loop.time()
            await asyncio.sleep(self.interval_s)
            late = loop.time() - asked - self.interval_s
            self.lag_s += (late - self.lag_s) * 0.2


def _refusal(status: int, code: str, message: str, retry_after: int, field: str | None = None
             ) -> tuple[dict[str, object], dict[str, object]]:
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    body = _encoder.encode({"error": error})
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"retry-after", str(retry_after).encode())]}
    return start, {"type": "http.response.body", "body": body}


class Callers(Protocol):
    """Who a request is, for the door (server/auth.py Authorizer)."""

    def caller(self, authorization: bytes | None) -> Hashable: ...

    def queues_of(self, caller: object) -> frozenset[str] | None: ...

    def may_create(self, caller: object) -> bool: ...


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None


class Door:
    """The ASGI middleware that applies the rules above. `callers` maps the Authorization
    header to whom creates in flight are counted for, and to its queues."""

    def __init__(self, app: ASGIApp, *, monitor: DbMonitor, lag: LagProbe,
                 options: ApiOptions, metrics: ApiMetrics, callers: Callers) -> None:
        self.app = app
        self.monitor = monitor
        self.lag = lag
        self.options = options
        self.metrics = metrics
        self.callers = callers
        self.shares = CreateShares(options.max_creates_in_flight)
        after = options.retry_after_s
        self._busy = _refusal(429, "overloaded", "the server is at capacity; retry later", after)
        self._down = _refusal(503, "database_unavailable", "the database is unreachable; retry "
                              "shortly", after)

    @property
    def creates_in_flight(self) -> int:
        return self.shares.total

    def _verdict(self, caller: Hashable) -> tuple[dict[str, object], dict[str, object]] | None:
        if not self.monitor.up:
            self.metrics.db_unavailable += 1
            return self._down
        if not self.shares.admits(caller, self.lag.lag_s > self.options.shed_lag_s):
            self.metrics.shed += 1
            return self._busy
        queues = self.callers.queues_of(caller)
        if queues and self._all_full(queues):
            self.metrics.queue_full += 1
            names = ", ".join(repr(q) for q in sorted(queues))
            return _refusal(429, "queue_full", f"every queue of this token is full ({names}; "
                            "MAX_QUEUE_DEPTH, per queue); retry later",
                            self.options.retry_after_s, "queue")
        return None

    def _all_full(self, queues: frozenset[str]) -> bool:
        return all(self.monitor.confirmed_full(queue) for queue in queues)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] not in CREATE_PATHS):
            await self.app(scope, receive, send)
            return
        caller = self.callers.caller(_authorization(scope))
        refusal = self._verdict(caller)
        if refusal is not None:
            start, body = refusal
            await send(start)
            await send(body)
            return
        self.shares.enter(caller)
        try:
            if scope["path"] == "/jobs" and self.monitor.depths.full_queues():
                name, receive = await read_queue(receive, self.options.body_timeout_s)
                queues = self.callers.queues_of(caller)
                # Only for a caller the route would let create: a missing or wrong token
                # gets the route's 401, never word of a queue's depth.
                if (name is not None and self.callers.may_create(caller)
                        and (queues is None or name in queues)
                        and self.monitor.confirmed_full(name)):
                    self.metrics.queue_full += 1
                    start, body = _refusal(429, "queue_full", f"queue {name!r} is full "
                                           "(MAX_QUEUE_DEPTH, per queue); retry later",
                                           self.options.retry_after_s, "queue")
                    await send(start)
                    await send(body)
                    return
            await self.app(scope, receive, send)
        finally:
            self.shares.leave(caller)
