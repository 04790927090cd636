"""A small asyncio TCP fault proxy between one worker process and PostgreSQL (loopback).

Modes (docs/failures.md §3):
  pass       forward both ways.
  blackhole  keep both sockets open and forward nothing: bytes are held, as a network
             holds them while TCP retransmits. `heal("resume")` delivers them late (a
             partition that healed); `heal("reset")` kills the connections (TCP gave up).
  reset      abort every connection with RST (SO_LINGER 0); new connections get RST too.

The proxy also reads each connection's startup packet (workers connect with
sslmode=disable) to learn its application_name, and keeps the high-water mark of the
worker's own connections (`boundq-worker` pool + `boundq-listener`) for the
bounded_concurrency check. Closed connections are noticed even while black-holed, since
the proxy keeps reading (and holding) what the worker sends. The mark is sampled a moment
after each connection opens, so a close and an open that race in the proxy's event loop
are not mistaken for two connections at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, TypeVar

COUNTED_APPS = frozenset({"boundq-worker", "boundq-listener"})
LOOPBACK = "127.0.0.1"
_SAMPLE_DELAY_S = 0.05
_T = TypeVar("_T")


class Mode(StrEnum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    RESET = "reset"


def parse_startup(buf: bytes | bytearray) -> tuple[str | None, int] | None:
    """(application_name or None, bytes used) of the first message; None: need more bytes.
    An SSL/GSS request (8 bytes, answered 'N') returns ("", 8): the startup follows it."""
    if len(buf) < 8:
        return None
    length, code = struct.unpack("!ii", bytes(buf[:8]))
    if code in (80877103, 80877104):
        return "", 8
    if len(buf) < length:
        return None
    if code != 196608:  # a CancelRequest or something else: not a session
        return None, length
    parts = bytes(buf[8:length]).split(b"\0")
    params = dict(zip(parts[0::2], parts[1::2], strict=False))
    app = params.get(b"application_name")
    return (app.decode(errors="replace") if app is not None else None), length


def _abort(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    def __init__(self, proxy: FaultProxy, cr: asyncio.StreamReader, cw: asyncio.StreamWriter
                 ) -> None:
        self.proxy = proxy
        self.cr, self.cw = cr, cw
        self.sw: asyncio.StreamWriter | None = None
        self.app: str | None = None
        self.client_open = True
        self._head = bytearray()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def counted(self) -> bool:
        return self.client_open and self.app in COUNTED_APPS

    async def run(self) -> None:
        try:
            sr, self.sw = await asyncio.open_connection(LOOPBACK, self.proxy.upstream_port())
        except OSError:
            self.abort()
            return
        up: asyncio.Queue[bytes | None] = asyncio.Queue()
        down: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks = [asyncio.ensure_future(c) for c in (
            self._read(self.cr, up, client=True), self._write(up, self.sw),
            self._read(sr, down, client=False), self._write(down, self.cw))]
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.client_open = False
        for w in (self.cw, self.sw):
            with contextlib.suppress(Exception):
                w.close()

    async def _read(self, reader: asyncio.StreamReader, out: asyncio.Queue[bytes | None],
                    client: bool) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if client and self.app is None and self._head is not None:
                    self._learn_app(data)
                await out.put(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if client:
                self.client_open = False
            await out.put(None)

    def _learn_app(self, data: bytes) -> None:
        self._head += data
        while True:
            parsed = parse_startup(self._head)
            if parsed is None:
                return
            app, used = parsed
            del self._head[:used]
            if app != "":
                self.app = app or "?"
                self.proxy.opened(self)
                return

    async def _write(self, queue: asyncio.Queue[bytes | None], writer: asyncio.StreamWriter
                     ) -> None:
        while True:
            chunk = await queue.get()
            await self.proxy.flowing.wait()  # black hole: hold the bytes, keep reading
            if chunk is None:
                writer.close()
                for task in self._tasks:  # one side ended: end the other once flushed
                    if task is not asyncio.current_task():
                        task.cancel()
                return
            writer.write(chunk)
            await writer.drain()

    def abort(self) -> None:
        self.client_open = False
        _abort(self.cw)
        _abort(self.sw)
        for task in self._tasks:
            task.cancel()


class FaultProxy:
    """One listening port in front of PostgreSQL; lives on the ProxyHost's event loop."""

    def __init__(self, upstream_port: Callable[[], int]) -> None:
        self.upstream_port = upstream_port
        self.mode = Mode.PASS
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.links: set[_Link] = set()
        self.reject_apps: frozenset[str] = frozenset()
        self.high_water = 0
        self.high_water_apps: dict[str, int] = {}
        self.accepted = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        link = _Link(self, cr, cw)
        self.accepted += 1
        if self.mode is Mode.RESET:
            link.abort()
            return
        self.links.add(link)
        try:
            await link.run()
        finally:
            self.links.discard(link)

    def opened(self, link: _Link) -> None:
        if link.app in self.reject_apps:
            link.abort()
            return
        asyncio.get_running_loop().call_later(_SAMPLE_DELAY_S, self._sample)

    def _sample(self) -> None:
        now = self.open_connections()
        if now > self.high_water:
            self.high_water = now
            apps: dict[str, int] = {}
            for link in self.links:
                if link.counted:
                    apps[str(link.app)] = apps.get(str(link.app), 0) + 1
            self.high_water_apps = apps

    def open_connections(self) -> int:
        return sum(1 for link in self.links if link.counted)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode is Mode.BLACKHOLE:
            self.flowing.clear()
            return
        self.flowing.set()
        if mode is Mode.RESET:
            self.reset_all()

    def heal(self, how: str = "resume") -> None:
        if how == "reset":
            self.reset_all()
        self.set_mode(Mode.PASS)

    def reset_all(self) -> None:
        for link in list(self.links):
            link.abort()

    async def close(self) -> None:
        self.reset_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


class ProxyHost:
    """Runs every FaultProxy on one event loop in a daemon thread; calls are synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy",
                                        daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[], _T]) -> _T:
        async def run() -> _T:
            return fn()

        return self.run(run())

    def run(self, coro: Awaitable[_T], timeout: float = 10) -> _T:
        async def wrap() -> _T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def add(self, upstream_port: Callable[[], int]) -> FaultProxy:
        async def make() -> FaultProxy:
            proxy = FaultProxy(upstream_port)
            await proxy.start()
            return proxy

        return self.run(make())

    def set_mode(self, proxy: FaultProxy, mode: Mode) -> None:
        self.call(lambda: proxy.set_mode(mode))

    def heal(self, proxy: FaultProxy, how: str = "resume") -> None:
        self.call(lambda: proxy.heal(how))

    def reject(self, proxy: FaultProxy, apps: frozenset[str]) -> None:
        def set_() -> None:
            proxy.reject_apps = apps
        self.call(set_)

    def stats(self, proxy: FaultProxy) -> dict[str, Any]:
        return self.call(lambda: {"high_water": proxy.high_water, "apps": proxy.high_water_apps,
                                  "open": proxy.open_connections(),
                                  "accepted": proxy.accepted, "mode": str(proxy.mode)})

    def remove(self, proxy: FaultProxy) -> None:
        self.run(proxy.close())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
