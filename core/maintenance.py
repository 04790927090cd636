"""Loops that keep the queue moving, run by every worker process at once (each statement
is safe to run concurrently): the lease reaper, the stager that makes due `scheduled`
jobs runnable, and the LISTEN wake-up listener."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from boundq.core import queue
from boundq.core.db import connect
from boundq.core.floors import RESCAN_SHARE, ClaimFloors
from boundq.core.lanes import Lane
from boundq.core.loops import BackgroundLoop, LoopSettings
from boundq.core.metrics import Metrics

log = logging.getLogger("boundq.worker")

CHANNEL = "boundq_jobs"  # also in the notify trigger of 0001_init.up.sql


class Reaper(BackgroundLoop):
    """Requeues jobs whose lease expired. One guarded statement, safe in every process.

    Its read of the running rows (jobs_running_idx) walks an entry for every job that ran
    since a held snapshot stopped the xmin horizon (core/floors.py): while one holds, it
    runs every `held_interval_s` (a quarter lease) instead, or RESCAN_SHARE times its own
    last duration if that is longer, so an expired lease may wait that much longer to be
    taken back."""

    name = "reaper"

    def __init__(self, settings: LoopSettings, lane: Lane, metrics: Metrics,
                 batch: int = 1000, floors: ClaimFloors | None = None,
                 held_interval_s: float = 0.0) -> None:
        super().__init__(settings, metrics)
        self.metrics: Metrics = metrics
        self.lane = lane
        self.batch = batch
        self.floors = floors
        self.held_interval_s = held_interval_s
        self.took_s = 0.0  # the last round's duration

    def idle_sleep(self) -> float:
        pause = super().idle_sleep()
        if self.floors is not None and self.floors.held:
            return max(pause, self.held_interval_s, RESCAN_SHARE * self.took_s)
        return pause

    async def run_once(self) -> int:
        began = time.monotonic()
        async with self.lane.connection() as conn:
            reaped = await queue.reap_expired(conn, self.batch)
        self.took_s = time.monotonic() - began
        if reaped:
            self.metrics.reaped += len(reaped)
            dead = sum(1 for status in reaped.values() if status == "failed")
            log.warning("reaped %d expired leases (%d dead-lettered)", len(reaped), dead,
                        extra={"reaped": len(reaped), "dead_lettered": dead})
        return len(reaped)

    def full(self, handled: int) -> bool:
        return handled >= self.batch


class Stager(BackgroundLoop):
    """Makes due `scheduled` jobs (delayed creates, retries in backoff) `new`. It sleeps
    until the earliest one is due, but never longer than its interval (a job scheduled
    meanwhile for sooner is then at most one interval late), so a delayed job runs no
    earlier than its run_at and no later than one POLL_INTERVAL_SECONDS after it."""

    name = "stager"

    def __init__(self, settings: LoopSettings, lane: Lane, batch: int = 1000) -> None:
        super().__init__(settings)
        self.lane = lane
        self.batch = batch
        self._staged = 0
        self._due_in: float | None = None

    async def run_once(self) -> int:
        async with self.lane.connection() as conn:
            self._staged = await queue.stage_due(conn, self.batch)
            self._due_in = None if self._staged >= self.batch else await queue.next_due_in(conn)
        return self._staged

    def full(self, handled: int) -> bool:
        return handled >= self.batch

    def idle_sleep(self) -> float:
        if self._due_in is None:
            return super().idle_sleep()
        return max(0.005, min(self._due_in, self.settings.interval_s))


class Listener(BackgroundLoop):
    """LISTENs on its own connection and wakes idle claim loops. Only a hint: polling is
    the truth. After any reconnect it LISTENs again and wakes everyone (notifications sent
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
