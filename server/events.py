"""The change feed behind `GET /events`: one reader per API process, fanned out to clients.

The reader polls the change log (`job_events`, migration 0009) every `poll_s` while at
least one client is connected, woken early by the `boundq_jobs` notifications (new
jobs) through a LISTEN connection that also exists only while clients do. A thousand
clients cost one statement a round, not a thousand. Each change is encoded once and put
on the bounded queue of every client whose filter it matches; a client whose queue is
full has fallen behind and is dropped (its queue is emptied at once, so a stalled socket
holds no more than the transport's own buffer). It may reconnect with its Last-Event-ID.

A position is (txid, seq), written on the wire as "txid-seq". The log delivers rows only
once their txid is below the xmin of a fresh snapshot (core/sql/events.sql), so a reader
never skips a row whose transaction committed after a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import msgspec
from sse_starlette import ServerSentEvent

from boundq.core.loops import BackgroundLoop, LoopSettings
from boundq.core.maintenance import Listener
from boundq.core.queries import Q
from boundq.server.errors import ApiError
from boundq.server.metrics import ApiMetrics

log = logging.getLogger("boundq.api")

Connect = Callable[[], AbstractAsyncContextManager[Any]]
Position = tuple[int, int]  # (txid, seq)

_POSITION = re.compile(r"([0-9]{1,20})-([0-9]{1,19})")
_MAX_TXID = 2**64 - 1
_MAX_SEQ = 2**63 - 1
_encoder = msgspec.json.Encoder()


def parse_position(text: str) -> Position:
    """"txid-seq" -> (txid, seq); ValueError for anything else."""
    match = _POSITION.fullmatch(text.strip())
    if match is None:
        raise ValueError("must be an event id as sent by GET /events (txid-seq)")
    txid, seq = int(match[1]), int(match[2])
    if txid > _MAX_TXID or seq > _MAX_SEQ:
        raise ValueError("must be an event id as sent by GET /events (txid-seq)")
    return txid, seq


def format_position(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


@dataclass(frozen=True, slots=True)
class EventSettings:
    poll_s: float = 0.25  # EVENTS_POLL_SECONDS: how often the reader polls while clients exist
    max_clients: int = 1000  # EVENTS_MAX_CLIENTS: streams held at once by one API process
    client_buffer: int = 1000  # EVENTS_CLIENT_BUFFER: changes queued per client before it is dropped
    batch: int = 1000  # rows per read of the log
    ping_s: float = 15.0  # keep-alive comments on a quiet stream
    send_timeout_s: float = 30.0  # a write to a client that takes longer closes its stream

    def __post_init__(self) -> None:
        if not 0 < self.poll_s <= 60:
            raise ValueError("poll_s must be in (0, 60]")
        if self.max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        if not 1 <= self.client_buffer <= 1_000_000:
            raise ValueError("client_buffer must be in [1, 1000000]")
        if not 1 <= self.batch <= 100_000:
            raise ValueError("batch must be in [1, 100000]")
        if not 0 < self.ping_s <= 3600 or not 0 < self.send_timeout_s <= 3600:
            raise ValueError("ping_s and send_timeout_s must be in (0, 3600]")


@dataclass(frozen=True, slots=True)
class Change:
    position: Position
    queue: str
    kind: str
    job_id: int
    frame: bytes  # the whole SSE event, encoded once for every client


@dataclass(frozen=True, slots=True)
class Missed:
    """The log no longer holds what followed the client's position: it goes on from here."""

    position: Position


@dataclass(frozen=True, slots=True)
class Dropped:
    """The client fell behind: its stream ends."""


Item = Change | Missed | Dropped


@dataclass(frozen=True, slots=True)
class EventFilter:
    queues: frozenset[str] | None = None  # the queue filter within the caller's scope
    kind: str | None = None
    ids: frozenset[int] | None = None

    def matches(self, change: Change) -> bool:
        return ((self.queues is None or change.queue in self.queues)
                and (self.kind is None or change.kind == self.kind)
                and (self.ids is None or change.job_id in self.ids))

    def params(self) -> dict[str, Any]:
        return {"queues": None if self.queues is None else sorted(self.queues),
                "kind": self.kind, "ids": None if self.ids is None else sorted(self.ids)}


@dataclass(frozen=True, slots=True)
class Page:
    horizon: Position  # the newest position retention deleted
    changes: list[Change]


def _change(row: dict[str, Any]) -> Change:
    body: dict[str, Any] = {"id": row["job_id"], "queue": row["queue"], "kind": row["kind"],
                            "status": row["status"], "attempt": row["attempt"]}
    if row["status"] == "success":
        body["result"] = row["result"]
    position = (int(row["txid"]), int(row["seq"]))
    frame = ServerSentEvent(data=_encoder.encode(body).decode(),
                            id=format_position(position)).encode()
    return Change(position, row["queue"], row["kind"], row["job_id"], frame)


async def read_page(conn: Any, after: Position, upto: Position | None, where: EventFilter,
                    limit: int) -> Page:
    """Changes after `after` (or after the horizon, when newer), up to `upto`."""
    from psycopg.rows import dict_row

    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.job_events_page, {
        "txid": str(after[0]), "seq": after[1],
        "upto_txid": None if upto is None else str(upto[0]),
        "upto_seq": None if upto is None else upto[1], "limit": limit, **where.params()})
    rows = await cur.fetchall()
    horizon = (int(rows[0]["horizon_txid"]), rows[0]["horizon_seq"])
    return Page(horizon, [_change(row) for row in rows if row["txid"] is not None])


class Subscriber:
    """One client's stream: its filter and its bounded queue."""

    def __init__(self, where: EventFilter, buffer: int) -> None:
        self.where = where
        self.buffer = buffer
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.dropped = False
        self.most_queued = 0  # the deepest its queue has been (tests read it)

    def offer(self, item: Item) -> bool:
        """Queue an item; False when the queue is full (the client fell behind)."""
        if self.queue.qsize() >= self.buffer:
            return False
        self.queue.put_nowait(item)
        self.most_queued = max(self.most_queued, self.queue.qsize())
        return True

    def drop(self) -> None:
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(Dropped())


class EventReader(BackgroundLoop):
    """Reads the log after its position and fans each change out to the hub's clients.
    Without clients it does nothing and forgets its position; the first client makes it
    start again from the log's head."""

    name = "events"

    def __init__(self, hub: EventHub) -> None:
        super().__init__(LoopSettings(hub.settings.poll_s, jitter=0.0))
        self.hub = hub
        self.position: Position | None = None
        self.ready = asyncio.Event()  # set once `position` is known
        self.rounds = 0
        self.read_round = asyncio.Event()  # set after every read of the log (tests wait on it)
        self._full = False

    async def run_once(self) -> int:
        hub = self.hub
        self._full = False
        if not hub.clients:
            self.position = None
            self.ready.clear()
            return 0
        async with hub.connect() as conn:
            if self.position is None:
                cur = await conn.execute(Q.job_events_head)
                row = await cur.fetchone()
                self.position = (int(row[0]), int(row[1])) if row else (0, 0)
                self.ready.set()
                self._full = True
                return 0
            page = await read_page(conn, self.position, None, EventFilter(), hub.settings.batch)
        self.rounds += 1
        if page.horizon > self.position:  # away longer than the log keeps changes
            self.position = page.horizon
            hub.fan_out_missed(page.horizon)
        for change in page.changes:
            hub.fan_out(change)
        if page.changes:
            self.position = page.changes[-1].position
        self._full = len(page.changes) >= hub.settings.batch
        self.read_round.set()
        return len(page.changes)

    def full(self, handled: int) -> bool:
        return self._full


class EventHub:
    """The clients of one API process and the reader that feeds them."""

    def __init__(self, connect: Connect, url: str, settings: EventSettings,
                 metrics: ApiMetrics, retry_after_s: int) -> None:
        self.connect = connect
        self.url = url
        self.settings = settings
        self.metrics = metrics
        self.retry_after_s = retry_after_s
        self.clients: set[Subscriber] = set()
        self.reader = EventReader(self)
        self.subscribed = asyncio.Event()  # set whenever a client subscribes (tests wait on it)
        self.dropped = asyncio.Event()  # set whenever a client is dropped
        self._stop = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        # Its LISTEN session while any client is here (tests wait on `listening`: after
        # it, only a NOTIFY or the poll wakes the reader).
        self.listener: Listener | None = None
        self._listener_task: asyncio.Task[None] | None = None

    async def subscribe(self, where: EventFilter) -> tuple[Subscriber, Position]:
        """Register a client and return it with the reader's position at that moment:
        every change after it reaches the client's queue."""
        if self._stop.is_set():
            raise ApiError(503, "shutting_down", "the API is shutting down",
                           headers={"Retry-After": str(self.retry_after_s)})
        if len(self.clients) >= self.settings.max_clients:
            raise ApiError(429, "too_many_streams",
                           f"{self.settings.max_clients} event streams are open already; "
                           "retry later", headers={"Retry-After": str(self.retry_after_s)})
        sub = Subscriber(where, self.settings.client_buffer)
        self.clients.add(sub)
        self._start()
        try:
            await self.reader.ready.wait()
        except BaseException:
            self.unsubscribe(sub)
            raise
        assert self.reader.position is not None
        self.subscribed.set()
        return sub, self.reader.position

    def unsubscribe(self, sub: Subscriber) -> None:
        self.clients.discard(sub)
        if not self.clients and self._listener_task is not None:
            # The listener ends only by cancellation (it waits on its connection).
            self._listener_task.cancel()
            self._listener_task = None
            self.listener = None

    def fan_out(self, change: Change) -> None:
        for sub in list(self.clients):
            if sub.where.matches(change) and not sub.offer(change):
                self._drop(sub)

    def fan_out_missed(self, position: Position) -> None:
        for sub in list(self.clients):
            if not sub.offer(Missed(position)):
                self._drop(sub)

    def _drop(self, sub: Subscriber) -> None:
        sub.drop()
        self.unsubscribe(sub)
        self.metrics.events_dropped += 1
        self.dropped.set()
        log.warning("an event stream fell %d changes behind and was dropped", sub.buffer)

    def _start(self) -> None:
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self.reader.run(self._stop),
                                                    name="boundq-api-events")
        self.reader.wake.set()
        if self._listener_task is None:
            self.listener = Listener(LoopSettings(1.0), self.url, self.reader.wake.set)
            self._listener_task = asyncio.create_task(self.listener.run(self._stop),
                                                      name="boundq-api-events-listen")

    async def close(self) -> None:
        self._stop.set()
        for sub in list(self.clients):
            sub.drop()
        self.clients.clear()
        tasks = [t for t in (self._reader_task, self._listener_task) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
