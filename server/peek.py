"""The door's look at a single create's queue, while some queue is full.

MAX_QUEUE_DEPTH is per queue, and the queue is in the body: a caller allowed every queue
(API_TOKEN, or no tokens at all) cannot be refused before the body. Refused at the route
instead, a flood into a full queue would pay for routing, the token check, decoding and
validation per request, on the event loop every other request waits for. So while a real
count finds some queue full, the door reads a `POST /jobs` body itself (small: at most
MAX_JOB_BODY), reads only its `queue`, and refuses there when that queue is full; any
other body is handed on unchanged, replayed to the app as it arrived. With no queue full
the door reads nothing.
"""

from __future__ import annotations

import asyncio

import msgspec
from starlette.types import Message, Receive

from boundq.core.validation import DEFAULT_QUEUE
from boundq.server.body import MAX_JOB_BODY


class _QueueOnly(msgspec.Struct):
    queue: object = DEFAULT_QUEUE


_decoder = msgspec.json.Decoder(_QueueOnly)


async def read_queue(receive: Receive, timeout_s: float) -> tuple[str | None, Receive]:
    """The body's `queue` (None when it cannot tell: too large, slow, not a JSON object, a
    queue that is not a string), and a receive that replays what was read, then reads on."""
    messages: list[Message] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                size += len(message.get("body", b""))
                if size > MAX_JOB_BODY or not message.get("more_body", False):
                    break
    except TimeoutError:
        pass  # the route's own read times out and answers 408
    replay = _replaying(messages, receive)
    complete = bool(messages) and messages[-1]["type"] == "http.request" and not (
        messages[-1].get("more_body", False)) and size <= MAX_JOB_BODY
    if not complete:
        return None, replay
    try:
        name = _decoder.decode(b"".join(m.get("body", b"") for m in messages)).queue
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None, replay
    return (name if isinstance(name, str) else None), replay


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
