"""Job permits: the hard bound on jobs a process owns at once (MAX_CONCURRENT_JOBS).

An acquirer takes up to n free permits (`async with permits.acquire_up_to(n) as grant`),
claims at most that many jobs, and hands one Permit to each job. Permits the grant did not
hand out return when the grant's block exits, whatever way it exits. A job's permit goes
with its outcome to the completer, which returns it once that outcome is written; a job
that ends without an outcome to write (cancelled, lease lost) returns it itself. A permit
counts from before the claim until after the job's completion has been written, so the
high-water mark also bounds the rows this process holds `processing`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType


class PermitsClosed(Exception):
    """The pool of permits was closed (shutdown): stop acquiring."""


class Permit:
    """One permit held by one job task. Release is idempotent."""

    __slots__ = ("_owner", "_released")

    def __init__(self, owner: Permits) -> None:
        self._owner = owner
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._give_back(1)

    @property
    def released(self) -> bool:
        return self._released

    async def __aenter__(self) -> Permit:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Grant:
    """Permits taken together by one acquirer; hands them out one at a time."""

    __slots__ = ("_left", "_owner", "count")

    def __init__(self, owner: Permits, count: int) -> None:
        self._owner = owner
        self.count = count
        self._left = count

    def take(self) -> Permit:
        if self._left <= 0:
            raise RuntimeError("grant exhausted: claimed more jobs than permits")
        self._left -= 1
        return Permit(self._owner)

    def _close(self) -> None:
        left, self._left = self._left, 0
        if left:
            self._owner._give_back(left)


class Permits:
    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("need at least one permit")
        self.total = total
        self.free = total
        self.high_water = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def in_use(self) -> int:
        return self.total - self.free

    def close(self) -> None:
        """Wake every waiter with PermitsClosed; held permits still come back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PermitsClosed())

    def _give_back(self, n: int) -> None:
        self.free += n
        if self.free > self.total:
            raise AssertionError("more permits returned than taken")
        self._wake(n)

    def _wake(self, n: int = 1) -> None:
        """Wake up to n waiters (each then takes what is free; one woken too many
        finds none and waits again)."""
        while n > 0 and self._waiters and self.free > 0:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1

    async def _wait_for_one(self) -> None:
        while self.free == 0 or self._closed:
            if self._closed:
                raise PermitsClosed()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Woken and cancelled at once: pass the wake-up on, or it is lost.
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake()
                raise

    @asynccontextmanager
    async def acquire_up_to(self, n: int) -> AsyncIterator[Grant]:
        """Wait for at least one free permit, then take up to n of them."""
        await self._wait_for_one()
        count = min(n, self.free)
        self.free -= count
        self.high_water = max(self.high_water, self.in_use)
        grant = Grant(self, count)
        try:
            yield grant
        finally:
            grant._close()


def release_all(permits: Iterable[Permit]) -> None:
    """Release many permits with one wake-up pass per pool (the completer's batch)."""
    returned: dict[Permits, int] = {}
    for permit in permits:
        if not permit._released:
            permit._released = True
            returned[permit._owner] = returned.get(permit._owner, 0) + 1
    for pool, n in returned.items():
        pool._give_back(n)
