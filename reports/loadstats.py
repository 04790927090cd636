"""Goodput and pickup latency of an open-loop run, read from each system's own records on
the server's clock (no client clock is involved).

  goodput   jobs finished successfully per second with their finish inside the window
  pickup    claim time minus arrival time of the jobs that arrived inside the window:
              boundq         jobs.started_at - jobs.run_at (attempt 1)
              pgqueuer       first 'picked' log row - its 'queued' log row
              procrastinate  'started' event - 'deferred' event
            A job not yet claimed when the stats are read counts with the time it has
            waited so far (a lower bound), and is counted in `unstarted`.

The window is [w0, w1): the producer's run, its warm-up left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

# Each: arrivals (arrived, started) of the window, finishes counted in the window, and
# the percentiles over arrivals. Parameters: w0, w1.
POINT_STATS = {
    "boundq": """
WITH arrivals AS (
    SELECT run_at AS arrived, started_at AS started FROM jobs
    WHERE created_at >= %(w0)s AND created_at < %(w1)s AND attempts <= 1
), finishes AS (
    SELECT finished_at AS finished FROM jobs
    WHERE status = 'success' AND finished_at >= %(w0)s AND finished_at < %(w1)s
)
SELECT (SELECT count(*) FROM finishes), count(*), count(*) FILTER (WHERE started IS NULL),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM coalesce(started, now()) - arrived)),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM coalesce(started, now()) - arrived))
FROM arrivals
""",
    "pgqueuer": """
WITH queued AS (
    SELECT job_id, created AS arrived FROM pgqueuer_log
    WHERE status = 'queued' AND created >= %(w0)s AND created < %(w1)s
), picked AS (
    SELECT job_id, min(created) AS started FROM pgqueuer_log
    WHERE status = 'picked' AND job_id IN (SELECT job_id FROM queued) GROUP BY job_id
), arrivals AS (
    SELECT queued.arrived, picked.started FROM queued LEFT JOIN picked USING (job_id)
), finishes AS (
    SELECT created AS finished FROM pgqueuer_log
    WHERE status = 'successful' AND created >= %(w0)s AND created < %(w1)s
)
SELECT (SELECT count(*) FROM finishes), count(*), count(*) FILTER (WHERE started IS NULL),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM coalesce(started, now()) - arrived)),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM coalesce(started, now()) - arrived))
FROM arrivals
""",
    "procrastinate": """
WITH deferred AS (
    SELECT job_id, at AS arrived FROM procrastinate_events
    WHERE type = 'deferred' AND at >= %(w0)s AND at < %(w1)s
), started AS (
    SELECT job_id, min(at) AS started FROM procrastinate_events
    WHERE type = 'started' AND job_id IN (SELECT job_id FROM deferred) GROUP BY job_id
), arrivals AS (
    SELECT deferred.arrived, started.started FROM deferred LEFT JOIN started USING (job_id)
), finishes AS (
    SELECT at AS finished FROM procrastinate_events
    WHERE type = 'succeeded' AND at >= %(w0)s AND at < %(w1)s
)
SELECT (SELECT count(*) FROM finishes), count(*), count(*) FILTER (WHERE started IS NULL),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM coalesce(started, now()) - arrived)),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM coalesce(started, now()) - arrived))
FROM arrivals
""",
}

# Jobs arrived in the window and not claimed yet (the tail waits for none to be left).
UNSTARTED = {
    "boundq": "SELECT count(*) FROM jobs WHERE created_at >= %(w0)s AND created_at < %(w1)s "
              "AND started_at IS NULL",
    "pgqueuer": "SELECT count(*) FROM pgqueuer WHERE created >= %(w0)s AND created < %(w1)s "
                "AND status = 'queued'",
    "procrastinate": "SELECT count(*) FROM procrastinate_jobs j JOIN procrastinate_events e "
                     "ON e.job_id = j.id AND e.type = 'deferred' WHERE e.at >= %(w0)s "
                     "AND e.at < %(w1)s AND j.status = 'todo'",
}

# Has the consumer finished anything yet (the warm-up job)?
FINISHED_ANY = {
    "boundq": "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'success')",
    "pgqueuer": "SELECT EXISTS (SELECT 1 FROM pgqueuer_log WHERE status = 'successful')",
    "procrastinate": "SELECT EXISTS (SELECT 1 FROM procrastinate_events "
                     "WHERE type = 'succeeded')",
}


@dataclass
class PointStats:
    finished: int
    arrived: int
    unstarted: int
    pickup_p50_s: float
    pickup_p99_s: float
    window_s: float

    @property
    def goodput_per_s(self) -> float:
        return self.finished / self.window_s if self.window_s > 0 else 0.0

    def row(self) -> dict[str, Any]:
        return {"goodput_per_s": self.goodput_per_s, "finished": self.finished,
                "arrived": self.arrived, "unstarted": self.unstarted,
                "pickup_p50_ms": self.pickup_p50_s * 1000,
                "pickup_p99_ms": self.pickup_p99_s * 1000, "window_s": self.window_s}


def point_stats(conn: psycopg.Connection[Any], system: str, w0: datetime, w1: datetime
                ) -> PointStats:
    row = conn.execute(POINT_STATS[system], {"w0": w0, "w1": w1}).fetchone()
    assert row is not None
    finished, arrived, unstarted, p50, p99 = row
    nan = float("nan")
    return PointStats(int(finished), int(arrived), int(unstarted),
                      nan if p50 is None else float(p50), nan if p99 is None else float(p99),
                      (w1 - w0).total_seconds())


def unstarted(conn: psycopg.Connection[Any], system: str, w0: datetime, w1: datetime) -> int:
    row = conn.execute(UNSTARTED[system], {"w0": w0, "w1": w1}).fetchone()
    return int(row[0]) if row else 0


def finished_any(conn: psycopg.Connection[Any], system: str) -> bool:
    row = conn.execute(FINISHED_ANY[system]).fetchone()
    return bool(row and row[0])
