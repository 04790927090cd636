"""The verdicts of the flow-control scenarios, measured from the database alone (the jobs
table, job_limit_changes and PostgreSQL's clock), never from a process's counters.

  isolation    the steady queue's pickup p99 (started_at - greatest(created_at, run_at))
               while the other queue floods, against the same queue alone (the runner's
               first phase): at most `threshold` x. For `tenants` that is tenant B while
               tenant A floods; for `ratelimited`, the unlimited jobs while the limited
               kind floods (they keep flowing).
  flow         the steady queue's jobs finished per second in the same windows: while
               flooded at least `flow_threshold` x alone (they keep flowing).
  rate bound   (ratelimited) no window of length w holds more than burst + rate x w starts
               of the limited kind, over every start before the runner lifted the limit
               to drain; and the limit was reached (more starts than its burst), or the
               check proves nothing.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from boundq.loadtests.flow_sql import FQ
from boundq.loadtests.pace import TRIM, Window

Conn = psycopg.Connection[Any]


@dataclass
class Pickup:
    queue: str
    window_start: str
    window_end: str
    jobs: int
    not_started: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    finished_per_s: float = 0.0  # the queue's jobs finished per second in the window
    # Jobs of other queues that started while one of this queue's jobs waited: p50, p99,
    # and the mean over its slowest tenth. Few while the waits are long: the whole
    # pipeline claimed little then (the machine, not the claim's order); many: the job
    # queued behind the others.
    overtaken_p50: float | None = None
    overtaken_p99: float | None = None
    overtaken_slowest: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pickup(conn: Conn, queue: str, window: Window) -> Pickup:
    row = conn.execute(FQ.flow_pickup, {"queue": queue, "a": window.start,
                                        "b": window.end}).fetchone()
    assert row is not None
    ms = [None if v is None else round(float(v) * 1000, 1) for v in row[2:]]
    done = conn.execute(FQ.flow_finished, {"queue": queue, "a": window.start,
                                           "b": window.end}).fetchone()
    rate = int(done[0]) / window.seconds if done is not None and window.seconds > 0 else 0.0
    waits = conn.execute(FQ.flow_pickup_waits, {"queue": queue, "a": window.start,
                                                 "b": window.end}).fetchall()
    others = [r[0] for r in conn.execute(FQ.flow_other_starts, {
        "queue": queue, "a": window.start}).fetchall()]
    overtaken = overtaken_counts([(r[0], r[1]) for r in waits], others)
    return Pickup(queue, window.start.isoformat(), window.end.isoformat(), int(row[0]),
                  int(row[1]), ms[0], ms[1], ms[2], round(rate, 2), *overtaken)


def _percentile(xs: Sequence[float], q: float) -> float:
    """percentile_cont: linear between the two closest ranks of sorted xs."""
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def overtaken_counts(waits: Sequence[tuple[datetime, datetime]], others: Sequence[datetime]
                     ) -> tuple[float | None, float | None, float | None]:
    """For each (arrived, started): how many of `others` (sorted start times) fall strictly
    between; p50, p99 and the mean over the tenth of the waits that lasted longest."""
    if not waits:
        return None, None, None
    counts = [bisect.bisect_left(others, started) - bisect.bisect_right(others, arrived)
              for arrived, started in waits]
    by_wait = [c for _, c in sorted(zip((s - a for a, s in waits), counts, strict=True),
                                    key=lambda pair: pair[0])]
    slowest = by_wait[-max(1, len(by_wait) // 10):]
    ordered = sorted(float(c) for c in counts)
    return (round(_percentile(ordered, 0.5), 1), round(_percentile(ordered, 0.99), 1),
            round(sum(slowest) / len(slowest), 1))


def flood_window(conn: Conn, flood_queue: str, since: datetime, load_end: datetime
                 ) -> Window | None:
    """From the flood queue's first job (created after `since`) to the end of the load,
    trimmed like the pace's windows (start-up and tail)."""
    row = conn.execute(FQ.flow_first_created, {"queue": flood_queue, "since": since}).fetchone()
    if row is None or row[0] is None or load_end <= row[0]:
        return None
    return Window(row[0], load_end).trimmed(TRIM)


def worst_excess(starts: Sequence[float], rate: float) -> float:
    """max over windows [s_i, s_j] of (starts in it) - rate x (s_j - s_i): the bucket
    allows at most `burst`. Linear: for each j, the best i <= j minimises i - rate s_i."""
    best = float("-inf")
    low = float("inf")
    for j, s in enumerate(starts):
        low = min(low, j - rate * s)
        best = max(best, (j - rate * s) - low + 1)
    return 0.0 if best == float("-inf") else best


@dataclass
class RateBound:
    kind: str
    rate_per_s: float
    burst: int
    starts: int
    span_s: float
    until: str
    worst_excess: float  # the most starts any window held beyond rate x its length
    achieved_per_s: float | None

    @property
    def held(self) -> bool:
        return self.worst_excess <= self.burst + 1e-6

    @property
    def exercised(self) -> bool:
        """More starts than a full bucket: the rate, not only the burst, was reached."""
        return self.starts > self.burst + self.rate_per_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"held": self.held, "exercised": self.exercised}


def rate_bound(conn: Conn, kind: str, rate: float, burst: int, until: datetime) -> RateBound:
    rows = conn.execute(FQ.flow_kind_starts, {"kind": kind, "until": until}).fetchall()
    times = [r[0] for r in rows]
    origin = times[0] if times else until
    secs = [(t - origin).total_seconds() for t in times]
    span = secs[-1] if secs else 0.0
    achieved = round((len(secs) - burst) / span, 2) if span > 0 and len(secs) > burst else None
    return RateBound(kind, rate, burst, len(secs), round(span, 3), until.isoformat(),
                     round(worst_excess(secs, rate), 3), achieved)


def limit_lifted_at(conn: Conn, kind: str) -> datetime | None:
    """When the runner's lift of the kind's rate was saved (its transaction's start):
    every claim that began before it ran under the limit."""
    rows = conn.execute(FQ.flow_limit_changes, {"scope": "kind", "name": kind}).fetchall()
    lifts = [r[4] for r in rows if r[0] is None]
    return lifts[-1] if lifts else None


@dataclass
class FlowVerdict:
    scenario: str
    steady_queue: str
    flood_queue: str
    threshold: float
    flow_threshold: float = 0.5
    alone: Pickup | None = None
    flooded: Pickup | None = None
    rate: RateBound | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if not self.alone or not self.flooded or not self.alone.p99_ms or \
                self.flooded.p99_ms is None:
            return None
        return round(self.flooded.p99_ms / self.alone.p99_ms, 2)

    @property
    def kept(self) -> float | None:
        """The steady queue's completions per second while flooded / alone."""
        if not self.alone or not self.flooded or not self.alone.finished_per_s:
            return None
        return round(self.flooded.finished_per_s / self.alone.finished_per_s, 2)

    def failures(self) -> list[str]:
        out = list(self.notes)
        what = ("tenant B's" if self.scenario == "tenants" else "the unlimited jobs'")
        ratio = self.ratio
        if ratio is None:
            out.append(f"{what} pickup p99 could not be measured (no jobs in a window)")
        elif ratio > self.threshold:
            out.append(f"{what} pickup p99 while {self.flood_queue!r} floods = {ratio:.2f} x "
                       f"alone, over the threshold {self.threshold:.2f} "
                       "(--isolation-threshold)")
        kept = self.kept
        if kept is not None and kept < self.flow_threshold:
            out.append(f"{what} completions/s while {self.flood_queue!r} floods = {kept:.2f} x "
                       f"alone, under {self.flow_threshold:.2f}: they did not keep flowing "
                       "(creates refused: its queue's MAX_QUEUE_DEPTH, or the door shed "
                       "its token)")
        for p in (self.alone, self.flooded):
            if p is not None and p.not_started:
                out.append(f"{p.not_started} jobs of queue {p.queue!r} never started")
        if self.rate is not None:
            r = self.rate
            if not r.held:
                out.append(f"rate limit broken: a window held {r.worst_excess:.1f} starts of "
                           f"kind {r.kind!r} beyond rate x its length; the burst is {r.burst}")
            if not r.exercised:
                out.append(f"the rate limit was never reached ({r.starts} starts of kind "
                           f"{r.kind!r}, burst {r.burst}): the check proves nothing")
        return out

    def lines(self) -> list[str]:
        out = []
        who = (f"tenant B (queue {self.steady_queue!r})" if self.scenario == "tenants"
               else f"unlimited jobs (queue {self.steady_queue!r})")
        for label, p in (("alone", self.alone), (f"while {self.flood_queue!r} floods",
                                                 self.flooded)):
            if p is None:
                out.append(f"{who} {label}: not measured")
            else:
                out.append(f"{who} {label}: {p.jobs:,} jobs, pickup p50 {p.p50_ms} ms, "
                           f"p99 {p.p99_ms} ms, max {p.max_ms} ms; {p.finished_per_s:g} "
                           "finished/s (from the database); other queues' jobs started "
                           f"while one waited: p50 {p.overtaken_p50}, p99 "
                           f"{p.overtaken_p99}, slowest tenth of waits {p.overtaken_slowest}")
        ratio = self.ratio
        if ratio is not None:
            out.append(f"isolation: pickup p99 while flooded = {ratio:.2f} x alone (threshold "
                       f"{self.threshold:.2f}); completions/s kept {self.kept} x alone "
                       f"(threshold {self.flow_threshold:.2f})")
        if self.rate is not None:
            r = self.rate
            out.append(f"rate limit of kind {r.kind!r} ({r.rate_per_s:g}/s, burst {r.burst}): "
                       f"{r.starts:,} starts in {r.span_s:.1f} s before the lift, "
                       f"{r.achieved_per_s}/s past the burst; worst window {r.worst_excess:.2f}"
                       f" starts beyond rate x length (allowed {r.burst}): "
                       + ("held" if r.held else "BROKEN"))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "steady_queue": self.steady_queue,
                "flood_queue": self.flood_queue, "threshold": self.threshold,
                "alone": self.alone.as_dict() if self.alone else None,
                "flooded": self.flooded.as_dict() if self.flooded else None,
                "ratio": self.ratio, "kept": self.kept,
                "flow_threshold": self.flow_threshold, "rate": self.rate.as_dict() if self.rate else None,
                "failures": self.failures()}


def alone_window(conn: Conn, queue: str, start: datetime, end: datetime) -> Window:
    """The steady queue alone: its phase, from the first start of one of its jobs (a
    queue new to the workers waits for the scout's next look: its first arrivals measure
    that, not the claim) and at least the phase's first tenth, to its end."""
    row = conn.execute(FQ.flow_first_started, {"queue": queue, "since": start}).fetchone()
    served = row[0] if row is not None and row[0] is not None else start
    trimmed = start + timedelta(seconds=(end - start).total_seconds() * TRIM)
    return Window(min(max(served, trimmed), end), end)
