"""The one shape of every background loop: validated settings, `run_once()`, a loop.

`run_once()` does one unit of work and returns how much it did; tests call it directly.
`run()` repeats it until `stop` is set: after an idle round it sleeps the interval (with
jitter, so processes started together drift apart, or until `wake` is set); after a full
round it goes again at once; after an error it backs off exponentially with jitter and
keeps going: a database outage never ends a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass

import psycopg
from psycopg_pool import PoolTimeout

from boundq.core.metrics import Metrics

log = logging.getLogger("boundq.loops")

# Errors that mean "the database is unreachable or the connection broke": expected
# during outages, logged briefly, retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    OSError,
    TimeoutError,
)
# Any database failure, for cleanup paths that must not raise (the reaper recovers).
DB_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, psycopg.Error)


@dataclass(frozen=True, slots=True)
class LoopSettings:
    interval_s: float
    jitter: float = 0.1
    backoff_base_s: float = 0.05
    backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError("interval_s must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if not 0 < self.backoff_base_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_base_s <= backoff_max_s")

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2^failures)]."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(failures, 30))
        return random.uniform(ceiling / 2, ceiling)

    def idle_sleep(self) -> float:
        return self.interval_s * random.uniform(1 - self.jitter, 1 + self.jitter)


class BackgroundLoop(ABC):
    name: str = "loop"

    def __init__(self, settings: LoopSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.wake = asyncio.Event()
        self.failures = 0
        self.idle = False  # in its idle sleep: a wake-up is useful now

    @abstractmethod
    async def run_once(self) -> int:
        """Do one round of work; return a count of items handled (0 = idle)."""

    def full(self, handled: int) -> bool:
        """True when the round was full and the next should start at once."""
        return False

    def idle_sleep(self) -> float:
        """How long to sleep after a round that was not full (unless woken)."""
        return self.settings.idle_sleep()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except TRANSIENT_ERRORS as exc:
                self.failures += 1
                if self.metrics is not None:
                    self.metrics.db_errors += 1
                delay = self.settings.backoff(self.failures)
                log.warning("%s: database unavailable (%s); retrying in %.2fs",
                            self.name, _one_line(exc), delay,
                            extra={"loop": self.name, "failures": self.failures})
                await _sleep_until(stop, None, delay)
                continue
            except Exception:
                # A bug, not an outage: say so loudly, but a worker must not die of it.
                self.failures += 1
                log.exception("%s: unexpected error", self.name, extra={"loop": self.name})
                await _sleep_until(stop, None, self.settings.backoff(self.failures))
                continue
            if self.failures:
                log.info("%s: database reachable again", self.name, extra={"loop": self.name})
                self.failures = 0
            if not self.full(handled):
                self.idle = True
                try:
                    await _sleep_until(stop, self.wake, self.idle_sleep())
                finally:
                    self.idle = False


async def _sleep_until(stop: asyncio.Event, wake: asyncio.Event | None, delay: float) -> None:
    """Sleep `delay` seconds, ending early when stop (or wake) is set."""
    if stop.is_set():
        return
    if wake is not None and wake.is_set():  # woken while it was busy: go at once
        wake.clear()
        return
    events = [stop] if wake is None else [stop, wake]
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    if wake is not None:
        wake.clear()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
