"""The pace of processing, measured from the database: idle (a calibration backlog and
nothing else) and under the flood, and their ratio.

Rates come from the jobs table alone, from PostgreSQL's own clock: jobs whose finished_at
falls in a steady window, divided by the window's length. Never from a process's
counters (the API and the workers may be different processes, and /metrics need not
carry the workers' counts).

  idle     a backlog of the run's job kind (`boundq enqueue`, before any load), drained
           by the workers alone; the window spans its first to last finished_at.
  flood    the load phase: from the first job the API accepted to the moment the load
           generator stopped.

Each window is trimmed by TRIM at both ends (start-up and tail). Under flood, the pace is
judged only when the workers were saturated: the queue of waiting jobs never emptied in
the trimmed window (a sweep over created_at and started_at, so between the runner's
once-a-second samples too). A load that leaves the workers idle at times says nothing
about how fast they work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from boundq.loadtests.probe import PROBE_NAME

CALIBRATION_NAME = "flood-calibration"
TRIM = 0.1
NOOP_RATE_GUESS = 3000.0  # jobs/s: sizes a noop backlog, which has no capacity bound


@dataclass
class Window:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def trimmed(self, fraction: float = TRIM) -> Window:
        cut = timedelta(seconds=self.seconds * fraction)
        return Window(self.start + cut, self.end - cut)


@dataclass
class Rate:
    jobs_per_s: float
    jobs: int
    window_s: float
    start: str
    end: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def db_now(db_url: str) -> datetime:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def finished_rate(conn: psycopg.Connection[Any], window: Window,
                  name: str | None = None) -> Rate:
    """Jobs (all, or those named `name`) that finished within the window, per second."""
    row = conn.execute(
        "SELECT count(*) FROM jobs WHERE finished_at > %(a)s AND finished_at <= %(b)s "
        "AND (%(name)s::text IS NULL OR name = %(name)s)",
        {"a": window.start, "b": window.end, "name": name}).fetchone()
    jobs = int(row[0]) if row else 0
    secs = window.seconds
    return Rate(round(jobs / secs, 1) if secs > 0 else 0.0, jobs, round(secs, 2),
                window.start.isoformat(), window.end.isoformat())


def min_waiting(conn: psycopg.Connection[Any], window: Window) -> int:
    """The fewest jobs waiting (created, not yet started) at any instant of the window.
    A job that was retried counts as waiting between its claims (started_at is its last
    claim): flood jobs do not fail, so that does not arise here."""
    row = conn.execute(
        """
        WITH initial AS (
            SELECT count(*) AS n FROM jobs
            WHERE created_at <= %(a)s
              AND coalesce(started_at, finished_at, 'infinity') > %(a)s),
        events AS (
            SELECT created_at AS t, 1 AS d FROM jobs
            WHERE created_at > %(a)s AND created_at <= %(b)s
            UNION ALL
            SELECT coalesce(started_at, finished_at), -1 FROM jobs
            WHERE coalesce(started_at, finished_at) > %(a)s
              AND coalesce(started_at, finished_at) <= %(b)s),
        depth AS (
            SELECT sum(d) OVER (ORDER BY t, d DESC ROWS UNBOUNDED PRECEDING) AS change
            FROM events)
        SELECT (SELECT n FROM initial) + least(0, coalesce((SELECT min(change) FROM depth), 0))
        """, {"a": window.start, "b": window.end}).fetchone()
    return int(row[0]) if row else 0


def enqueue_backlog(env: dict[str, str], kind: str, payload: dict[str, Any], count: int,
                    cwd: str) -> int:
    """`count` jobs in one COPY through the `boundq enqueue` command (the stable way in)."""
    argv = [sys.executable, "-m", "boundq", "enqueue", "--kind", kind, "--payload",
            json.dumps(payload), "--count", str(count), "--name", CALIBRATION_NAME]
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"boundq enqueue failed: {done.stderr.strip()[-500:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["created"])


def calibration_size(capacity: float | None, seconds: float) -> int:
    """Enough jobs for `seconds` of work at the capacity bound (at least 200)."""
    return max(200, round((capacity or NOOP_RATE_GUESS) * seconds))


def calibration_done(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE finished_at IS NULL), count(*) FROM jobs "
        "WHERE name = %s", (CALIBRATION_NAME,)).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def idle_rate(conn: psycopg.Connection[Any]) -> Rate | None:
    """The calibration backlog's steady pace: its finished_at span, trimmed."""
    row = conn.execute("SELECT min(finished_at), max(finished_at) FROM jobs WHERE name = %s",
                       (CALIBRATION_NAME,)).fetchone()
    if row is None or row[0] is None or row[1] <= row[0]:
        return None
    return finished_rate(conn, Window(row[0], row[1]).trimmed(), CALIBRATION_NAME)


def load_window(conn: psycopg.Connection[Any], load_end: datetime) -> Window | None:
    """From the first job the API accepted from the load generator to the end of the load
    (the door probe starts with Locust, before its users have spawned)."""
    row = conn.execute("SELECT min(created_at) FROM jobs WHERE name <> ALL(%s)",
                       ([CALIBRATION_NAME, PROBE_NAME],)).fetchone()
    if row is None or row[0] is None or load_end <= row[0]:
        return None
    return Window(row[0], load_end)


@dataclass
class Pace:
    idle: Rate | None
    flood: Rate | None
    capacity: float | None
    threshold: float
    min_waiting: int | None = None

    @property
    def ratio(self) -> float | None:
        if not self.idle or not self.flood or not self.idle.jobs_per_s:
            return None
        return round(self.flood.jobs_per_s / self.idle.jobs_per_s, 3)

    @property
    def saturated(self) -> bool | None:
        return None if self.min_waiting is None else self.min_waiting > 0

    @property
    def judged(self) -> bool:
        return self.ratio is not None and bool(self.saturated)

    @property
    def too_slow(self) -> bool:
        ratio = self.ratio
        return self.judged and ratio is not None and ratio < self.threshold

    def as_dict(self) -> dict[str, Any]:
        idle_of_cap = (round(self.idle.jobs_per_s / self.capacity, 3)
                       if self.idle and self.capacity else None)
        return {"idle": self.idle.as_dict() if self.idle else None,
                "flood": self.flood.as_dict() if self.flood else None,
                "ratio": self.ratio, "threshold": self.threshold,
                "saturated": self.saturated, "min_waiting_in_window": self.min_waiting,
                "judged": self.judged, "too_slow": self.too_slow,
                "capacity_bound_jobs_per_s": self.capacity,
                "idle_vs_capacity": idle_of_cap, "trim": TRIM}

    def line(self) -> str:
        """processing under flood = X x idle (idle R1 jobs/s, under flood R2 jobs/s; ...)"""
        cap = f"; capacity bound {self.capacity:,.0f} jobs/s" if self.capacity else ""
        idle = f"{self.idle.jobs_per_s:,.0f} jobs/s" if self.idle else "not measured"
        flood = f"{self.flood.jobs_per_s:,.0f} jobs/s" if self.flood else "not measured"
        rates = f"(idle {idle}, under flood {flood}{cap})"
        ratio = self.ratio
        if ratio is None:
            return f"processing under flood: not measured {rates}"
        if not self.saturated:
            return (f"processing under flood = {ratio:.2f} x idle {rates}: not saturated "
                    "(the queue emptied during the window), pace not judged")
        verdict = "under" if ratio < self.threshold else "at or above"
        return (f"processing under flood = {ratio:.2f} x idle {rates}; {verdict} the "
                f"threshold {self.threshold:.2f}")

    def capacity_line(self) -> str | None:
        if not self.idle or not self.capacity:
            return None
        return (f"idle pace = {self.idle.jobs_per_s / self.capacity:.0%} of the capacity "
                f"bound ({self.idle.jobs_per_s:,.0f} of {self.capacity:,.0f} jobs/s, "
                f"{self.idle.jobs:,} jobs in {self.idle.window_s:.1f} s)")


def measure_flood(db_url: str, load_end: datetime, idle: Rate | None, capacity: float | None,
                  threshold: float) -> Pace:
    with psycopg.connect(db_url, autocommit=True) as conn:
        window = load_window(conn, load_end)
        if window is None:
            return Pace(idle, None, capacity, threshold)
        steady = window.trimmed()
        return Pace(idle, finished_rate(conn, steady), capacity, threshold,
                    min_waiting(conn, steady))


WaitFn = Callable[[float], bool]  # wait(seconds) -> True when the run was interrupted


def calibrate(db_url: str, env: dict[str, str], job_ms: int, count: int, cwd: str,
              wait: WaitFn, timeout_s: float) -> tuple[Rate | None, str]:
    """Enqueue the backlog, let the workers drain it with no other load, and measure.
    Returns the idle rate (None when interrupted or not drained in time) and a line."""
    kind, payload = ("sleep", {"ms": job_ms}) if job_ms > 0 else ("noop", {})
    started = time.monotonic()
    created = enqueue_backlog(env, kind, payload, count, cwd)
    with psycopg.connect(db_url, autocommit=True,
                         application_name="boundq-flood-calibration") as conn:
        while True:
            left, _ = calibration_done(conn)
            elapsed = time.monotonic() - started
            if left == 0:
                break
            if elapsed > timeout_s:
                return None, (f"idle calibration: {left:,} of {created:,} jobs still waiting "
                              f"after {timeout_s:.0f} s; pace not measured")
            if wait(0.25):
                return None, "idle calibration interrupted; pace not measured"
        rate = idle_rate(conn)
    what = f"sleep {job_ms} ms" if job_ms > 0 else "noop"
    if rate is None:
        return None, f"idle calibration: {created:,} {what} jobs gave no window to measure"
    return rate, (f"idle calibration: {created:,} {what} jobs drained in {elapsed:.1f} s; "
                  f"steady {rate.jobs_per_s:,.0f} jobs/s ({rate.jobs:,} finished in the middle "
                  f"{rate.window_s:.1f} s, from the database)")
