"""The scheduler: a maintenance loop of every worker process that turns due cron ticks
into jobs (core/cron.py for the ticks, core/sql/schedules.sql for the statements).

Each round reads the schedules whose watermark the database's clock says is due, works
out each one's ticks with croniter, and hands them to `schedule_fire`: one statement that
moves the watermark from the value read, records the ticks and creates their jobs. Every
process runs it at once; for each watermark one statement wins and the others write
nothing, so a tick makes exactly one job however many schedulers run and whichever of
them dies mid-tick. It sleeps until the earliest watermark is due, but never longer than
its interval (a schedule PUT meanwhile is then picked up at most one interval late).

Fault points for the invariant tests (core/faults.py, off unless asked for):
`BOUNDQ_CRASH_AT=after_tick` SIGKILLs the process right after a fire committed jobs;
`BOUNDQ_LOSE_ANSWER=tick` loses the answer of a fire that committed jobs (once).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

from boundq.core import schedules
from boundq.core.cron import CronError
from boundq.core.faults import crash_point, lose_answer
from boundq.core.lanes import Lane
from boundq.core.loops import BackgroundLoop, LoopSettings
from boundq.core.metrics import Metrics

log = logging.getLogger("boundq.worker")


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    interval_s: float = 1.0  # longest sleep between rounds
    batch: int = 100  # due schedules read per round (a full batch goes again at once)
    ticks_kept: int = 1000  # tick rows kept per schedule (the window GET and checks see)
    deadline_s: float = 10.0  # per statement: a black-holed connection is given up

    def __post_init__(self) -> None:
        if not 0.01 <= self.interval_s <= 3600:
            raise ValueError("interval_s must be between 0.01 and 3600")
        if not 1 <= self.batch <= 10_000:
            raise ValueError("batch must be between 1 and 10000")
        if not 1 <= self.ticks_kept <= 1_000_000:
            raise ValueError("ticks_kept must be between 1 and 1000000")
        if not self.deadline_s > 0:
            raise ValueError("deadline_s must be positive")

    def loop(self) -> LoopSettings:
        return LoopSettings(self.interval_s, jitter=0.1, backoff_max_s=1.0)


class Scheduler(BackgroundLoop):
    name = "scheduler"

    def __init__(self, lane: Lane, settings: SchedulerSettings | None = None,
                 metrics: Metrics | None = None) -> None:
        self.config = settings or SchedulerSettings()
        super().__init__(self.config.loop(), metrics)
        self.lane = lane
        self.created = 0  # jobs this scheduler created
        self.lost_races = 0  # fires another scheduler (or a PUT/DELETE) had already done
        self._full = False
        self._due_in: float | None = None

    async def run_once(self) -> int:
        c = self.config
        async with self.lane.connection(c.deadline_s) as conn:
            due = await schedules.due(conn, c.batch)
        # Every process reads the same due list: a different order in each lets them
        # spread over the schedules instead of all racing for the first one.
        random.shuffle(due)
        made = 0
        for d in due:
            try:
                f = schedules.plan(d)
            except (CronError, ValueError) as exc:  # stored before a croniter change?
                log.error("schedule %s: cannot compute its ticks: %s", d.name, exc,
                          extra={"schedule": d.name})
                continue
            async with self.lane.connection(c.deadline_s) as conn:
                fired = await schedules.fire(conn, f, c.ticks_kept)
            crash_point("after_tick", bool(fired.job_ids))
            await lose_answer("tick", bool(fired.job_ids))
            if not fired.won:
                self.lost_races += 1
            elif f.ticks and f.ticks[0] > f.window_start:
                log.warning("schedule %s: ticks from %s to before %s were missed and skipped "
                            "(catch_up=%d)", d.name, f.window_start.isoformat(),
                            f.ticks[0].isoformat(), d.catch_up, extra={"schedule": d.name})
            made += len(fired.job_ids)
            await asyncio.sleep(0)  # croniter is CPU work: let the other loops in
        self.created += made
        self._full = len(due) >= c.batch
        if not self._full:
            async with self.lane.connection(c.deadline_s) as conn:
                self._due_in = await schedules.next_due_in(conn)
        return made

    def full(self, handled: int) -> bool:
        return self._full

    def idle_sleep(self) -> float:
        if self._due_in is None:
            return super().idle_sleep()
        return max(0.005, min(self._due_in, self.config.interval_s))
