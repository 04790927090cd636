"""`GET /events`: a Server-Sent Events stream of job changes (server/events.py feeds it).

A client that sends Last-Event-ID is registered first (live changes queue up), then
caught up from the log with its own filters up to the reader's position at registration,
then served from its queue, skipping what the catch-up already sent: no gap and no
duplicate. When retention deleted changes after its position it gets `event: missed`
and goes on from the oldest change kept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from boundq.core.events_log import events_enabled
from boundq.core.validation import QUEUE_NAME
from boundq.server.auth import Scope
from boundq.server.errors import ApiError
from boundq.server.events import (
    Dropped,
    EventFilter,
    EventHub,
    Missed,
    Position,
    Subscriber,
    format_position,
    parse_position,
    read_page,
)
from boundq.server.state import ApiState

MAX_IDS = 1000
MAX_ID = 2**63 - 1
LAST_EVENT_ID = "Last-Event-ID"


def _bad(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_field", message, field)


def parse_filter(request: Request, scope: Scope) -> EventFilter:
    """The `queue`, `kind` and `ids` filters within the caller's scope."""
    params = request.query_params
    for name in ("queue", "kind", "ids"):
        if len(params.getlist(name)) > 1:
            raise _bad(name, "give it once")
    queue_name = params.get("queue")
    if queue_name is not None and QUEUE_NAME.fullmatch(queue_name) is None:
        raise _bad("queue", "must be a queue name")
    if queue_name is not None and not scope.allows(queue_name):
        # As GET /jobs: the same answer for every queue outside the scope.
        raise ApiError(404, "not_found", f"queue {queue_name!r} not found", "queue")
    kind = params.get("kind")
    if kind is not None and not (1 <= len(kind) <= 100 and "\x00" not in kind):
        raise _bad("kind", "must be 1..100 characters without NUL")
    ids: frozenset[int] | None = None
    raw_ids = params.get("ids")
    if raw_ids is not None:
        parts = raw_ids.split(",")
        if not 1 <= len(parts) <= MAX_IDS or not all(
                p.isascii() and p.isdigit() and len(p) <= 19 and 1 <= int(p) <= MAX_ID
                for p in parts):
            raise _bad("ids", f"must be 1 to {MAX_IDS} job ids separated by commas")
        ids = frozenset(int(p) for p in parts)
    queues = frozenset({queue_name}) if queue_name is not None else scope.queues
    return EventFilter(queues, kind, ids)


def parse_last_event_id(request: Request) -> Position | None:
    raw = request.headers.get(LAST_EVENT_ID)
    if raw is None or raw.strip() == "":
        return None
    try:
        return parse_position(raw)
    except ValueError as exc:
        raise _bad(LAST_EVENT_ID, str(exc)) from None


MAX_CHUNK = 500  # queued changes written to a client in one send


def missed_frame(after: Position, position: Position) -> bytes:
    data = json.dumps({"after": format_position(after),
                       "resumed_from": format_position(position)})
    return ServerSentEvent(data=data, id=format_position(position), event="missed").encode()


async def _stream(hub: EventHub, sub: Subscriber, start: Position,
                  after: Position | None) -> AsyncIterator[bytes | ServerSentEvent]:
    """The catch-up (when resuming), then the live queue; what is queued at once goes out
    in one write of frames encoded once for every client."""
    try:
        sent = start
        if after is not None:
            sent = after
            async for page, position in _catch_up(hub, sub.where, after, start):
                yield page
                sent = position
                if sub.dropped:  # fell behind while catching up: its queue says so
                    break
        while True:
            items = [await sub.queue.get()]
            while len(items) < MAX_CHUNK and not sub.queue.empty():
                items.append(sub.queue.get_nowait())
            chunk = bytearray()
            for item in items:
                if isinstance(item, Dropped):
                    if chunk:
                        yield bytes(chunk)
                    yield ServerSentEvent(data='{"reason":"fell behind"}', event="dropped")
                    return
                if item.position <= sent:  # the catch-up sent it already
                    continue
                chunk += (missed_frame(sent, item.position) if isinstance(item, Missed)
                          else item.frame)
                sent = item.position
            if chunk:
                yield bytes(chunk)
    finally:
        hub.unsubscribe(sub)


async def _catch_up(hub: EventHub, where: EventFilter, after: Position, upto: Position
                    ) -> AsyncIterator[tuple[bytes, Position]]:
    """The log's changes in (after, upto] within the filter, a page per write."""
    position = after
    while position < upto:
        async with hub.connect() as conn:
            page = await read_page(conn, position, upto, where, hub.settings.batch)
        chunk = bytearray()
        if page.horizon > position:
            chunk += missed_frame(position, page.horizon)
            position = page.horizon
        for change in page.changes:
            chunk += change.frame
            position = change.position
        if chunk:
            yield bytes(chunk), position
        if len(page.changes) < hub.settings.batch:
            return


async def events(request: Request) -> Response:
    state: ApiState = request.app.state.api
    scope = state.auth.check(request, write=False)
    where = parse_filter(request, scope)
    after = parse_last_event_id(request)
    state.monitor.check_available()
    hub = state.events
    async with hub.connect() as conn:
        if not await events_enabled(conn):
            raise ApiError(409, "events_off", "the change log behind /events is off: "
                           "`boundq events on` turns it on")
    sub, start = await hub.subscribe(where)
    settings = hub.settings
    headers: dict[str, Any] = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return EventSourceResponse(_stream(hub, sub, start, after), headers=headers,
                               ping=int(max(1, settings.ping_s)),
                               send_timeout=settings.send_timeout_s)
