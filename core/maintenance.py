"""Loops that keep the queue healthy: the lease reaper and the LISTEN wake-up listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from psycopg_pool import AsyncConnectionPool

from boundq.core import queue
from boundq.core.db import connect
from boundq.core.loops import BackgroundLoop, LoopSettings
from boundq.core.metrics import Metrics

log = logging.getLogger("boundq.worker")

CHANNEL = "boundq_jobs"  # also in the notify trigger of 0001_init.up.sql


class Reaper(BackgroundLoop):
    """Requeues jobs whose lease expired. One guarded statement, safe in every process."""

    name = "reaper"

    def __init__(self, settings: LoopSettings, pool: AsyncConnectionPool[Any], metrics: Metrics,
                 batch: int = 1000) -> None:
        super().__init__(settings, metrics)
        self.metrics: Metrics = metrics
        self.pool = pool
        self.batch = batch

    async def run_once(self) -> int:
        async with self.pool.connection() as conn:
            reaped = await queue.reap_expired(conn, self.batch)
        if reaped:
            self.metrics.reaped += len(reaped)
            dead = sum(1 for status in reaped.values() if status == "failed")
            log.warning("reaped %d expired leases (%d dead-lettered)", len(reaped), dead,
                        extra={"reaped": len(reaped), "dead_lettered": dead})
        return len(reaped)

    def full(self, handled: int) -> bool:
        return handled >= self.batch


class Listener(BackgroundLoop):
    """LISTENs on its own connection and wakes idle acquirers. Only a hint: polling is the
    truth. After any reconnect it LISTENs again and wakes everyone (notifications sent
    while it was away are gone). A periodic query on the idle connection finds half-open
    sockets (pg-boss #850) instead of silently falling back to polling."""

    name = "listener"

    def __init__(self, settings: LoopSettings, url: str, on_wake: Callable[[], None],
                 check_every_s: float = 5.0) -> None:
        super().__init__(settings)
        self.url = url
        self.on_wake = on_wake
        self.check_every_s = check_every_s
        self.listening = asyncio.Event()
        self.connects = 0

    async def run_once(self) -> int:
        """One connection's lifetime: returns when it breaks (by raising) or on stop."""
        self.listening.clear()
        conn = await connect(self.url, "listener")
        try:
            await conn.execute("LISTEN boundq_jobs")
            self.connects += 1
            self.listening.set()
            self.on_wake()
            while True:  # ends by error, or by cancellation at shutdown
                async for _ in conn.notifies(timeout=self.check_every_s):
                    self.on_wake()
                async with asyncio.timeout(self.check_every_s):
                    await conn.execute("SELECT 1")
        finally:
            self.listening.clear()
            await conn.close()
