"""Long polls: `GET /jobs/{id}?wait=S` answers once the job is terminal or S seconds pass.

One loop serves every waiter of the API process: each round asks, in one statement by
primary key (`job_terminal_among`), which of the waited jobs are terminal, and wakes their
waiters. It runs only while someone waits, so an idle API pays nothing, and a thousand
waiters cost one statement a round, not a thousand. Waiters are bounded (`max_waiters`):
past the bound a wait is refused with 429 and Retry-After instead of holding sockets and
memory without end. A database error ends nobody's wait early; the waiters time out and
answer with what the database says then (or 503 if it is still down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import psycopg

from boundq.core.queries import Q
from boundq.server.errors import ApiError

log = logging.getLogger("boundq.api")

Connect = Callable[[], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True, slots=True)
class WaitSettings:
    max_wait_s: float = 60.0  # the largest S a client may ask for
    poll_s: float = 0.2  # how often the loop asks the database while anyone waits
    max_waiters: int = 1000  # long polls held at once by one API process

    def __post_init__(self) -> None:
        if not 0 < self.max_wait_s <= 3600:
            raise ValueError("max_wait_s must be in (0, 3600]")
        if not 0 < self.poll_s <= 10:
            raise ValueError("poll_s must be in (0, 10]")
        if self.max_waiters < 1:
            raise ValueError("max_waiters must be at least 1")


class WaitRoom:
    def __init__(self, connect: Connect, settings: WaitSettings, retry_after_s: int) -> None:
        self.connect = connect
        self.settings = settings
        self.retry_after_s = retry_after_s
        self._waiters: dict[int, list[asyncio.Future[None]]] = {}
        self._count = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.woken = 0  # waiters woken by a round (not by their timeout), since start
        self.registered = asyncio.Event()  # set once a waiter has been registered

    @property
    def waiting(self) -> int:
        return self._count

    async def wait(self, job_id: int, timeout_s: float) -> None:
        """Return when the loop has seen the job terminal, or after timeout_s."""
        if self._closed:
            return
        if self._count >= self.settings.max_waiters:
            raise ApiError(429, "too_many_waiters",
                           f"{self.settings.max_waiters} long polls are held already; "
                           "retry later or without wait", "wait",
                           headers={"Retry-After": str(self.retry_after_s)})
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, []).append(future)
        self._count += 1
        self.registered.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="boundq-api-waits")
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await future
        finally:
            self._count -= 1
            others = self._waiters.get(job_id)
            if others is not None and future in others:
                others.remove(future)
                if not others:
                    del self._waiters[job_id]

    async def run_once(self) -> int:
        """One round: wake the waiters of every waited job now terminal; how many woke."""
        ids = list(self._waiters)
        if not ids:
            return 0
        async with self.connect() as conn:
            cur = await conn.execute(Q.job_terminal_among, {"ids": ids})
            finished = [row[0] for row in await cur.fetchall()]
        woken = 0
        for job_id in finished:
            for future in self._waiters.pop(job_id, []):
                if not future.done():
                    future.set_result(None)
                    woken += 1
        self.woken += woken
        return woken

    async def _loop(self) -> None:
        while self._waiters and not self._closed:
            try:
                await self.run_once()
            except (psycopg.Error, ApiError, OSError) as exc:
                log.debug("long-poll round failed: %s", exc)
            await asyncio.sleep(self.settings.poll_s)

    async def close(self) -> None:
        """At shutdown: every waiter answers now with what the database says."""
        self._closed = True
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self._waiters.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
