"""Loops that keep a long-lived queue small and its reads cheap, run by every worker
process (each statement is safe to run concurrently):

- the scout finds the queues that have runnable jobs (a skip scan of the claim index)
  and reads the flow settings (weights, pauses, limits) for the claim planner, and
  moves `new` rows with a future run_at (plain SQL inserts) to `scheduled`, and tells
  the claim floors whether a snapshot holds the xmin horizon (core/floors.py);
- the tally folder folds per-second tallies into minutes and old minutes into totals;
- the retention sweeper deletes finished jobs older than RETENTION_SECONDS (success,
  cancelled) and FAILED_RETENTION_SECONDS (failed), in small batches;
- the event log trimmer deletes changes (GET /events) older than
  EVENTS_RETENTION_SECONDS, in small batches, and moves the log's horizon.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from boundq.core import flow, queue
from boundq.core.floors import RESCAN_SHARE, ClaimFloors
from boundq.core.lanes import Lane
from boundq.core.loops import BackgroundLoop, LoopSettings
from boundq.core.planner import QueuePlanner
from boundq.core.queries import Q

log = logging.getLogger("boundq.worker")


# While a snapshot holds the xmin horizon, the skip scan for queues with work walks every
# claim-index entry the snapshot keeps (it has no floor to start at): it runs this often
# then, or RESCAN_SHARE times its own duration after it ended if that is longer, and the
# queues it found last stand in between (the claims' floors, not the scout, keep the
# known queues cheap). A queue's very first job may wait that long then.
HELD_QUEUES_EVERY_S = 10.0


class Scout(BackgroundLoop):
    name = "scout"

    def __init__(self, settings: LoopSettings, lane: Lane, planner: QueuePlanner,
                 on_found: Callable[[], None], floors: ClaimFloors | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(settings)
        self.lane = lane
        self.planner = planner
        self.on_found = on_found  # new queues with work: wake the claim loops
        self.floors = floors  # told whether a snapshot holds the horizon
        self.clock = clock
        self._waiting: list[str] = []
        self._queues_next = -math.inf  # while held: when the skip scan is due again

    def _queues_due(self) -> bool:
        held = self.floors is not None and self.floors.held
        return not held or self.clock() >= self._queues_next

    async def run_once(self) -> int:
        async with self.lane.connection() as conn:
            if self._queues_due():
                began = self.clock()
                self._waiting = [q for q in await queue.queues_waiting(conn)
                                 if self.planner.serves(q)]
                ended = self.clock()
                self._queues_next = ended + max(HELD_QUEUES_EVERY_S,
                                                RESCAN_SHARE * (ended - began))
            waiting = self._waiting
            early = await queue.schedule_early(conn, waiting)
            news = await flow.planner_news(conn)
            if self.floors is not None:
                self.floors.horizon(await queue.oldest_snapshot_age(conn))
        before = set(self.planner.weights)
        self.planner.refresh(waiting, news)
        if set(waiting) - before:
            self.on_found()
        return early


# Per-second tallies are kept this long before they fold into minutes: /stats reads the
# last few whole seconds. Minutes are kept for the dashboard's hour, then fold into totals.
SECONDS_KEPT_S = 120.0
MINUTES_KEPT_S = 2 * 3600.0


class TallyFolder(BackgroundLoop):
    name = "tallies"

    def __init__(self, settings: LoopSettings, lane: Lane) -> None:
        super().__init__(settings)
        self.lane = lane

    async def run_once(self) -> int:
        async with self.lane.connection() as conn:
            return await queue.fold_tallies(conn, SECONDS_KEPT_S, MINUTES_KEPT_S)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long finished jobs stay; None = forever."""

    success_s: float | None  # success and cancelled (RETENTION_SECONDS)
    failed_s: float | None  # failed: the dead letters (FAILED_RETENTION_SECONDS)
    batch: int = 500

    @property
    def active(self) -> bool:
        return self.success_s is not None or self.failed_s is not None


class RetentionSweeper(BackgroundLoop):
    """Deletes the oldest finished jobs past their retention, a small batch per statement
    (row locks held for milliseconds, skipped rows left for the next pass), going again at
    once while batches come back full."""

    name = "retention"

    def __init__(self, settings: LoopSettings, lane: Lane, policy: RetentionPolicy) -> None:
        super().__init__(settings)
        self.lane = lane
        self.policy = policy
        self.deleted = 0
        self._full = False

    async def run_once(self) -> int:
        p = self.policy
        n = 0
        self._full = False
        async with self.lane.connection() as conn:
            for statuses, keep_s in ((["success", "cancelled"], p.success_s),
                                     (["failed"], p.failed_s)):
                if keep_s is None:
                    continue
                gone = await queue.delete_finished_before(conn, keep_s, statuses, p.batch)
                self._full = self._full or gone >= p.batch
                n += gone
        self.deleted += n
        return n

    def full(self, handled: int) -> bool:
        return self._full


class EventLogTrimmer(BackgroundLoop):
    """Deletes the oldest changes of the event log (job_events) past `keep_s`, a prefix in
    delivery order of at most `batch` rows per statement, and records the newest deleted
    position as the horizon: a stream resuming from before it is told it missed changes.
    Deleting history (retention of jobs) writes no events."""

    name = "event-log"

    def __init__(self, settings: LoopSettings, lane: Lane, keep_s: float,
                 batch: int = 1000) -> None:
        super().__init__(settings)
        if not keep_s > 0 or batch < 1:
            raise ValueError("keep_s must be positive and batch at least 1")
        self.lane = lane
        self.keep_s = keep_s
        self.batch = batch
        self.deleted = 0

    async def run_once(self) -> int:
        async with self.lane.connection() as conn:
            cur = await conn.execute(Q.job_events_delete_before,
                                     {"keep_s": self.keep_s, "limit": self.batch})
            row = await cur.fetchone()
        gone = int(row[0]) if row else 0
        self.deleted += gone
        return gone

    def full(self, handled: int) -> bool:
        return handled >= self.batch
