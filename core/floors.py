"""Claim floors: where a claim starts its walk of the claim index while the horizon is held.

A claim moves its rows out of `new`, but their old versions keep their entries in the
claim index until vacuum removes them, and a scan skips such an entry cheaply only once
no snapshot can still see the old version. While a session holds the xmin horizon (a
transaction left open in a console, a long report, a stuck replica's feedback), nothing
that a claim took since can be skipped: every claim walks them all, from the head of the
queue, and its cost grows with the work done since the horizon stopped. Measured here:
100,000 claimed rows behind a held snapshot make a 100-row claim read 2,393 buffers and
take 27 ms; at the soak's pace the drain fell to half within ten minutes.

So, while the scout sees a snapshot older than `pin_s` (core/housekeeping.py), each
claim sends a floor per (queue, priority): the run_at of the last row a claim took there,
less `margin_s`, or the claim's own time less `margin_s` where the walk found nothing
more. A claim then starts each priority's range at its floor and walks only what arrived
since. Why that loses nothing: a claim walks in (priority, run_at, id) order and takes
every row it can see and lock, so below the last row it took there is nothing it could
have taken. What it could not see are rows committed after its snapshot: an insert whose
transaction began more than `margin_s` before it committed, a job made runnable again
(reaped, released, retried, unblocked, staged) with its old run_at, a claim of another
process that rolled back. Those are stragglers, and a walk from the head takes them. It
costs what every claim cost before, and that grows with the pin: it runs one at a time
per process, and the next is due `rescan_s` after the last one ended, or RESCAN_SHARE
times its duration if that is longer (one walk of 0.4 s, then 4 s of floored claims),
so it never takes more than a bounded share of a claim loop. While floors are on, a
straggler waits at most that much longer.

Floors stay on after the snapshot goes, until a walk from the head begun since costs
about what a floored claim costs: at most SETTLED_RATIO times the median of the last
floored claims, and at most rescan_s / RESCAN_SHARE. The entries the pin kept are then
dead to every snapshot, but they stay in the index until vacuum removes them:
- a scan still visits each one's heap tuple once to learn it and mark it: in the hour's
  soak, turning floors off the moment a ten-minute pin ended sent every claim over four
  million such entries at once, and the drain stalled for most of a minute (2,702 jobs/s
  against 3,549, pickup p99 14 s). Walked one at a time and spaced as under the pin, the
  marking is done by one claim while the others stay on their floors;
- once marked, a scan skips each entry without the heap but still reads every index page
  they fill: after a 150 s pin, about 3,500 pages, 7 ms of every claim (a whole floored
  cycle took 0.1 ms), so every claim cycle ran 5-15 ms until vacuum had passed, and
  pickups slowed for most of a minute. So "cheap" is measured against the floored claims, not against
  a fixed time: floors stay on until vacuum has removed what the pin kept.
With no snapshot held and the walk from the head cheap, no floors are sent and the claim
is what it always was.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # core/queue.py imports this module
    from boundq.core.queue import ClaimedRow

PRIORITIES = range(10)  # jobs.priority 0-9 (jobs_priority_range)
# A walk from the head is due again this many times its own duration after it ended, at
# the soonest: at most 1 / (1 + RESCAN_SHARE) of one claim loop's time goes to them.
RESCAN_SHARE = 10.0
# After the snapshot goes, a walk from the head that takes at most this many times the
# median floored claim (of the last FLOORED_KEPT) turns floors off: what the pin kept is
# gone from the index, not only marked dead.
SETTLED_RATIO = 2.0
FLOORED_KEPT = 64


@dataclass(frozen=True, slots=True)
class FloorSettings:
    pin_s: float = 5.0  # a snapshot this old holds the horizon: floors on
    margin_s: float = 1.0  # below the last row taken: inserts still committing
    rescan_s: float = 1.0  # a walk from the head at least this often while floors are on

    def __post_init__(self) -> None:
        if not self.pin_s > 0:
            raise ValueError("pin_s must be positive")
        if not 0 <= self.margin_s <= 3600:
            raise ValueError("margin_s must be in [0, 3600]")
        if not self.rescan_s > 0:
            raise ValueError("rescan_s must be positive")


@dataclass(frozen=True, slots=True)
class FloorScan:
    """The floors one claim sends (empty: it walks every queue from its head)."""

    queues: list[str] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    ats: list[datetime] = field(default_factory=list)
    full: bool = True
    began: float = 0.0  # the clock when the claim asked for it

    def params(self) -> dict[str, object]:
        return {"floor_queues": self.queues, "floor_priorities": self.priorities,
                "floor_ats": self.ats}


NO_FLOORS = FloorScan()


class ClaimFloors:
    """One process's floors, shared by its claim loops (each floor is a fact about the
    database, whoever's claim found it)."""

    def __init__(self, settings: FloorSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or FloorSettings()
        self.clock = clock
        self.held = False  # the scout's news: a snapshot holds the horizon
        self.on = False  # floors are sent: held, or not yet settled since it ended
        self._released = -math.inf  # when the scout last saw the snapshot gone
        self._at: dict[tuple[str, int], datetime] = {}
        self._walking: FloorScan | None = None  # the walk from the head in flight
        self._walk_began = 0.0
        self._next_walk = -math.inf
        self._floored: deque[float] = deque(maxlen=FLOORED_KEPT)  # their durations
        self.full_scans = 0
        self.floored_scans = 0

    def horizon(self, oldest_snapshot_s: float) -> None:
        """The age of the oldest snapshot of this database (the scout reads it)."""
        held = oldest_snapshot_s >= self.settings.pin_s
        if held and not self.on:
            self._start()
        elif self.held and not held:
            self._released = self.clock()  # on until a walk begun from now on is cheap
        self.held = held

    def _start(self) -> None:
        self.on = True
        self._at.clear()  # floors learned before the last settling promise nothing
        self._next_walk = -math.inf

    def _settle(self) -> None:
        self.on = False
        self._at.clear()
        self._next_walk = -math.inf

    def scan(self, queues: Sequence[str]) -> FloorScan:
        """The floors for the next claim of these queues."""
        if not self.on or not queues:
            return NO_FLOORS
        now = self.clock()
        if self._walking is None and now >= self._next_walk:
            self._walking = FloorScan(began=now)  # ended() knows it by identity
            self._walk_began = now
            self.full_scans += 1
            return self._walking
        out = FloorScan(full=False, began=now)
        for q in queues:
            for p in PRIORITIES:
                at = self._at.get((q, p))
                if at is not None:
                    out.queues.append(q)
                    out.priorities.append(p)
                    out.ats.append(at)
        if not out.queues:
            return NO_FLOORS
        self.floored_scans += 1
        return out

    def ended(self, scan: FloorScan) -> None:
        """A claim that sent `scan` is over, whatever its outcome: after a walk from the
        head, the next is due rescan_s later, or RESCAN_SHARE times its duration; once
        the snapshot is gone, a cheap one turns floors off. A floored claim's duration
        is what the walk is measured against."""
        now = self.clock()
        if scan is not self._walking:
            if self.on and not scan.full:
                self._floored.append(now - scan.began)
            return
        self._walking = None
        took = now - self._walk_began
        self._next_walk = now + max(self.settings.rescan_s, RESCAN_SHARE * took)
        if not self.held and self._walk_began >= self._released and self._cheap(took):
            self._settle()

    def _cheap(self, took: float) -> bool:
        """A walk from the head that costs about what a floored claim costs."""
        if took > self.settings.rescan_s / RESCAN_SHARE:
            return False
        return not self._floored or took <= SETTLED_RATIO * statistics.median(self._floored)

    def observe(self, asked: Mapping[str, int], rows: Sequence[ClaimedRow],
                capped: bool) -> None:
        """Learn from a claim: `asked` per queue (the fast path's plan), the rows it took,
        and whether the statement's overall cap (permits) stopped it."""
        if not self.on or not rows:
            return
        margin = timedelta(seconds=self.settings.margin_s)
        at = max(r.claimed_at for r in rows) - margin
        for q, n in asked.items():
            mine = [r for r in rows if r.queue == q]
            walked = [r for r in mine if not r.aged]
            if len(mine) < n and not capped:
                # the walk of every priority ran out: nothing it could take is left below
                # the claim's time, less what may still be committing
                for p in PRIORITIES:
                    self._raise((q, p), at)
                continue
            if not walked:
                continue
            lowest = min(r.priority for r in walked)
            for p in PRIORITIES:
                if p > lowest:  # the walk went past these priorities: they ran out
                    self._raise((q, p), at)
            last = max(r.run_at for r in walked if r.priority == lowest)
            self._raise((q, lowest), min(last - margin, at))

    def _raise(self, key: tuple[str, int], at: datetime) -> None:
        before = self._at.get(key)
        if before is None or at > before:
            self._at[key] = at
