"""Job permits: the hard bound on jobs a process owns at once (MAX_CONCURRENT_JOBS).

A claim loop (core/cycler.py) holds permits in a Grant: the permits of the jobs whose
outcomes it writes (absorbed, never returned to the pool in between) plus free ones taken
without waiting (`permits.try_take(n)`). It claims at most that many jobs, in the same
statement that writes the outcomes, and hands one Permit to each new job; what the grant
did not hand out goes back when it closes, whatever way the cycle ended. A job that ends
without an outcome to write (cancelled, lease lost) returns its own permit.

A permit counts from before the claim until after the job's completion has been written,
so the high-water mark also bounds the rows this process holds `processing`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


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


class Grant:
    """Permits held together by one claim loop; hands them out one at a time. Whatever it
    did not hand out goes back to the pool when it is closed."""

    __slots__ = ("_left", "_owner", "count")

    def __init__(self, owner: Permits, count: int) -> None:
        self._owner = owner
        self.count = count
        self._left = count

    @property
    def left(self) -> int:
        return self._left

    def take(self) -> Permit:
        if self._left <= 0:
            raise RuntimeError("grant exhausted: claimed more jobs than permits")
        self._left -= 1
        return Permit(self._owner)

    def absorb(self, permit: Permit) -> None:
        """Take over a job's permit without returning it to the pool in between: the
        permit of a finished job passes to its successor, or back to the pool when the
        grant closes, and counts all along."""
        if permit._owner is not self._owner:
            raise ValueError("a permit of another pool")
        if permit._released:
            raise RuntimeError("permit already returned")
        permit._released = True
        self.count += 1
        self._left += 1

    def close(self) -> None:
        left, self._left = self._left, 0
        if left:
            self._owner._give_back(left)

    def detach(self) -> Grant:
        """Move the permits not yet handed out to a new grant (this one is left empty),
        to be kept past the block that would close this one."""
        moved = Grant(self._owner, self._left)
        self.count -= self._left
        self._left = 0
        return moved

    def __enter__(self) -> Grant:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Permits:
    def __init__(self, total: int, on_free: Callable[[], None] | None = None) -> None:
        if total < 1:
            raise ValueError("need at least one permit")
        self.total = total
        self.free = total
        self.high_water = 0
        self.closed = False
        # Called when permits come back to the pool: a claim loop may use them.
        self.on_free = on_free

    @property
    def in_use(self) -> int:
        return self.total - self.free

    def close(self) -> None:
        """Shutdown: no more permits are handed out; held ones still come back."""
        self.closed = True

    def try_take(self, n: int) -> Grant:
        """Up to n free permits now, without waiting (possibly none). Use the grant as a
        context manager or close it: what it did not hand out goes back."""
        count = 0 if self.closed else max(0, min(n, self.free))
        self.free -= count
        if self.in_use > self.high_water:
            self.high_water = self.in_use
        return Grant(self, count)

    def _give_back(self, n: int) -> None:
        self.free += n
        if self.free > self.total:
            raise AssertionError("more permits returned than taken")
        if self.on_free is not None and not self.closed:
            self.on_free()


def release_all(permits: Iterable[Permit]) -> None:
    """Release many permits with one give-back per pool (a written batch of failures)."""
    returned: dict[Permits, int] = {}
    for permit in permits:
        if not permit._released:
            permit._released = True
            returned[permit._owner] = returned.get(permit._owner, 0) + 1
    for pool, n in returned.items():
        pool._give_back(n)
