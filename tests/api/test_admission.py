"""Fair shedding at the door: under overload the caller holding more than its share of the
creates in flight is refused, and a caller using less still gets through. Driven with
counters and held requests (the door's own ASGI calls, an app that waits on an event),
never with timing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from boundq.server.admission import Door, LagProbe
from boundq.server.auth import Authorizer
from boundq.server.depth import QueueDepths
from boundq.server.fairshare import CreateShares
from boundq.server.metrics import ApiMetrics
from boundq.server.options import ApiOptions
from tests.conftest import fast_settings

TOKENS = {"tok-a": ["a"], "tok-b": ["b"]}


class GlobalShedding(CreateShares):
    """The door before fair shedding: under overload everyone is refused alike."""

    def admits(self, caller: Hashable, late: bool) -> bool:
        return not late and self.total < self.capacity


def _check_fair(make: Callable[[int], CreateShares]) -> None:
    """The rule, on the policy alone: a caller alone may use everything; under overload the
    caller over its share is refused and one under it admitted; never beyond 2x."""
    shares = make(4)
    for _ in range(4):
        assert shares.admits("A", late=False)
        shares.enter("A")
    assert not shares.admits("A", late=False), "A alone beyond the capacity"
    assert shares.admits("B", late=False), "B refused while A holds more than its share"
    shares.enter("B")
    assert not shares.admits("A", late=True)
    assert shares.admits("B", late=True), "B (1 of 5 in flight) refused on lag"
    shares.enter("B")
    assert not shares.admits("B", late=False), "B at its share (2 of 4) admitted"
    for _ in range(4):
        shares.leave("A")
    assert shares.held == {"B": 2} and shares.total == 2
    assert not shares.admits("B", late=True), "a caller alone under lag holds all in flight"
    assert shares.admits("B", late=False)
    flooded = make(2)
    for caller in ("A", "A", "B", "C"):
        assert flooded.admits(caller, late=False)
        flooded.enter(caller)
    assert flooded.total == 4 and not flooded.admits("D", late=False), "beyond 2x capacity"


def test_fair_shares_rule() -> None:
    _check_fair(CreateShares)


def test_the_rule_catches_global_shedding() -> None:
    with pytest.raises(AssertionError, match="B refused"):
        _check_fair(GlobalShedding)


@dataclass
class HeldApp:
    """An app whose creates stay in flight until released; counts who got in."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    entered: list[str] = field(default_factory=list)
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self.arrived:
            self.entered.append(dict(scope["headers"]).get(b"authorization", b"").decode())
            self.arrived.notify_all()
        await self.release.wait()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


class UpMonitor:
    """What the door reads of DbMonitor: up, and whether a queue's count found it full."""

    def __init__(self) -> None:
        self.up = True
        self.depths = QueueDepths(3)

    def confirmed_full(self, queue: str) -> bool:
        return self.depths.confirmed_full(queue, 2.0)


async def _post(door: Door, token: str | None, path: str = "/jobs") -> int | str:
    """The status, or for a 429 its error code."""
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": path,
                             "headers": headers}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await door(scope, receive, send)
    status = int(sent[0]["status"])
    if status == 429:
        return str(json.loads(sent[1]["body"])["error"]["code"])
    return status


def _door(app: HeldApp, capacity: int, lag: LagProbe, tokens: bool = True) -> Door:
    settings = (fast_settings(API_TOKEN="admin", API_TOKENS=json.dumps(TOKENS)) if tokens
                else fast_settings())
    monitor: Any = UpMonitor()
    return Door(app, monitor=monitor, lag=lag, metrics=ApiMetrics(),
                options=ApiOptions(max_creates_in_flight=capacity, shed_lag_s=0.05),
                callers=Authorizer(settings, protect_reads=False))


async def _hold(app: HeldApp, door: Door, token: str | None, n: int
                ) -> list[asyncio.Task[int | str]]:
    before = len(app.entered)
    held = [asyncio.create_task(_post(door, token)) for _ in range(n)]
    async with app.arrived:
        await app.arrived.wait_for(lambda: len(app.entered) == before + n)
    return held


async def test_door_sheds_the_flooding_token_and_admits_the_quiet_one() -> None:
    app, lag = HeldApp(), LagProbe()
    door = _door(app, 4, lag)
    held = await _hold(app, door, "tok-a", 4)  # A alone uses every slot
    assert await _post(door, "tok-a") == "overloaded"
    held += await _hold(app, door, "tok-b", 1)  # B, below its share, still gets in
    assert door.creates_in_flight == 5
    lag.lag_s = 1.0  # the event loop runs late: still A is refused and B admitted
    assert await _post(door, "tok-a") == "overloaded"
    held += await _hold(app, door, "tok-b", 1)
    assert door.metrics.shed == 2
    app.release.set()
    assert sorted(await asyncio.gather(*held)) == [201] * 6
    assert door.creates_in_flight == 0 and door.shares.held == {}
    assert await _post(door, "tok-a") == "overloaded", "alone under lag: refused as before"
    lag.lag_s = 0.0
    assert await _post(door, "tok-a") == 201


def test_callers_are_the_configured_tokens() -> None:
    """At most one caller per token plus one for everything else: a flood of made-up
    tokens is one caller, and cannot claim a share each."""
    caller = Authorizer(fast_settings(API_TOKENS=json.dumps(TOKENS)), False).caller
    a, b = caller(b"Bearer tok-a"), caller(b"bearer  tok-b ")
    assert a is not None and b is not None and a != b
    assert {caller(b"Bearer made-up"), caller(b"Bearer other"), caller(None),
            caller(b"Basic tok-a")} == {None}
    assert Authorizer(fast_settings(), False).caller(b"Bearer tok-a") is None


async def test_without_tokens_everyone_is_one_caller() -> None:
    app, lag = HeldApp(), LagProbe()
    door = _door(app, 2, lag, tokens=False)
    held = await _hold(app, door, None, 2)
    assert await _post(door, "tok-b") == "overloaded"  # not configured: the same caller as the rest
    assert await _post(door, None, "/jobs/bulk") == "overloaded"
    app.release.set()
    assert await asyncio.gather(*held) == [201, 201]


async def test_door_refuses_a_token_whose_every_queue_is_full() -> None:
    """Before the body is read (the flooding tenant's uploads cost nothing), only on a
    real count that is recent, and only for the token whose queues are all full."""
    app, lag = HeldApp(), LagProbe()
    app.release.set()
    door = _door(app, 4, lag)
    depths: QueueDepths = door.monitor.depths
    depths.add("a", 3)  # our own creates: a figure, not a count
    assert await _post(door, "tok-a") == 201
    depths.replace({"a": 3, "b": 2})  # counted now: a is full (limit 3)
    assert await _post(door, "tok-a", "/jobs/bulk") == "queue_full"
    assert door.metrics.queue_full == 1
    assert await _post(door, "tok-b") == 201
    assert await _post(door, "admin") == 201  # every queue: judged on the body's queue
    depths.counted_at = 0.0  # the count is old: the route decides, after a fresh count
    assert await _post(door, "tok-a") == 201


def test_a_refusal_rests_on_a_count_not_on_the_figure() -> None:
    """A create that committed just before a count and notes itself just after it is in
    the figure twice: the figure reaches the limit one job early. It asks for a count;
    only a count refuses."""
    depths = QueueDepths(5)
    depths.replace({"b": 4})  # the count already saw the create that notes itself next
    depths.add("b", 1)
    assert depths.full("b") and not depths.counted_full("b")
    depths.recounted("b", 4)
    assert not depths.full("b")
    depths.recounted("b", 5)
    assert depths.counted_full("b") and depths.confirmed_full("b", 1.0)
    assert not depths.full("a") and depths.total == 5 and depths.deepest == 5


async def test_door_reads_a_single_creates_queue_while_one_is_full() -> None:
    """A caller allowed every queue cannot be refused before the body: while some queue's
    count is full, the door reads a single create's `queue` and refuses there, and hands
    every other body on intact (the app reads it as sent). A queue outside the caller's
    scope goes on to the route (its 403), full or not."""
    seen: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(body)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    door = _door(HeldApp(), 4, LagProbe())
    door.app = app

    async def post(token: str, chunks: list[bytes]) -> int | str:
        scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/jobs",
                                 "headers": [(b"authorization", f"Bearer {token}".encode())]}
        messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                    for i, c in enumerate(chunks)]
        sent: list[Message] = []

        async def receive() -> Message:
            return messages.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        await door(scope, receive, send)
        if sent[0]["status"] == 429:
            error = json.loads(sent[1]["body"])["error"]
            assert error["field"] == "queue", error
            return str(error["code"])
        return int(sent[0]["status"])

    to_a = [b'{"name": "x", ', b'"queue": "a"}']
    assert await post("admin", to_a) == 201  # nothing full: the door reads nothing
    door.monitor.depths.replace({"a": 3})
    assert await post("admin", to_a) == "queue_full"
    assert await post("admin", [b'{"name": "y", "queue": "b"}']) == 201
    assert await post("admin", [b'{"name": "z"}']) == 201  # the default queue
    assert await post("admin", [b'not json']) == 201  # the route answers it
    assert await post("tok-b", to_a) == 201  # outside B's scope: the route's 403
    assert seen == [b''.join(to_a), b'{"name": "y", "queue": "b"}', b'{"name": "z"}',
                    b'not json', b''.join(to_a)]
    assert door.metrics.queue_full == 1 and door.creates_in_flight == 0
