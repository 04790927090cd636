"""The waiting jobs of each queue, as the API knows them without a query per request.

MAX_QUEUE_DEPTH bounds each queue on its own: one tenant's backlog fills its own queue
and refuses its own creates, never another queue's. The figure of a queue is its last
real count (status `new`, counted no further than MAX_QUEUE_DEPTH + 1 on the claim index)
plus the jobs this process created in it since; jobs the workers took are not
subtracted, so between counts a figure only grows. A figure at the limit only asks for a
fresh count of that queue (DbMonitor.admit); a refusal rests on a real count.

The dict holds the queues that had waiting jobs at the last count, plus those this
process created into since: each full count replaces it, so it stays as small as the set
of queues in use.
"""

from __future__ import annotations

import time
from collections.abc import Mapping


class QueueDepths:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.figures: dict[str, int] = {}
        self._counted: dict[str, int] = {}  # the real counts alone, without our creates
        self.counted_at = 0.0  # the last count of every queue (monotonic)
        self._confirmed_at: dict[str, float] = {}  # counts of one queue since then

    # --- reading -------------------------------------------------------------------------
    def of(self, queue: str) -> int:
        return self.figures.get(queue, 0)

    def full(self, queue: str) -> bool:
        """The figure reached the limit: the queue looks full (worth a count)."""
        return self.figures.get(queue, 0) >= self.limit

    def counted_full(self, queue: str) -> bool:
        """The last real count reached the limit: what a refusal rests on. A create that
        commits just before a count and notes itself just after it is in the figure
        twice, so the figure alone would refuse below the limit."""
        return self._counted.get(queue, 0) >= self.limit

    def full_queues(self) -> list[str]:
        limit = self.limit
        return [queue for queue, n in self.figures.items() if n >= limit]

    @property
    def total(self) -> int:
        """Every queue together: what /readyz and the waiting gauge show."""
        return sum(self.figures.values())

    @property
    def deepest(self) -> int:
        return max(self.figures.values(), default=0)

    def confirmed_full(self, queue: str, within_s: float) -> bool:
        """A real count of the queue, at most `within_s` old, reached the limit."""
        return (self._counted.get(queue, 0) >= self.limit
                and self.count_age(queue) < within_s)

    def count_age(self, queue: str) -> float:
        """Seconds since a real count of this queue (the last full count or its own)."""
        counted = max(self.counted_at, self._confirmed_at.get(queue, 0.0))
        return time.monotonic() - counted

    # --- writing -------------------------------------------------------------------------
    def add(self, queue: str, n: int) -> None:
        self.figures[queue] = self.figures.get(queue, 0) + n

    def replace(self, counts: Mapping[str, int]) -> None:
        """A full count: queues absent from it have nothing waiting."""
        self.figures = dict(counts)
        self._counted = dict(counts)
        self._confirmed_at = {}
        self.counted_at = time.monotonic()

    def recounted(self, queue: str, n: int) -> None:
        self.figures[queue] = self._counted[queue] = n
        self._confirmed_at[queue] = time.monotonic()
