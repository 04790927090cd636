"""The workflow scenario's verdict, measured from the database alone (the jobs table,
job_dependencies and PostgreSQL's clock), never from a process's counters.

  latency     per fan-out/fan-in graph, its sink's finished_at - its root's created_at;
              p50, p99 and max over the graphs whose root was created in a window: the
              graphs alone (the runner's first phase), and while the create flood runs
              (the flood's window, trimmed like the pace's)
  completion  every graph of either window ended with its sink in `success`, and every
              sink waited for the whole fan-out (its fan-in is the graph's width)
  threshold   with --workflow-threshold T > 0: fail when the p99 while flooded is above
              T x alone. 0 (the default) prints the ratio without judging it: a stage
              released while MAX_QUEUE_DEPTH jobs wait may run behind them, so the latency
              under a flood grows with the backlog the run chose, not by a fixed factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from boundq.loadtests.flow_sql import FQ
from boundq.loadtests.pace import Window

Conn = psycopg.Connection[Any]
SINK_NAME = "workflow-sink"
ROOT_NAME = "workflow-root"
CHILD_NAME = "workflow-child"


def percentile(values: Sequence[float], q: float) -> float | None:
    """PostgreSQL's percentile_cont: linear between the two closest ranks."""
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Graph:
    root_id: int
    sink_id: int
    root_created_at: datetime
    status: str
    latency_s: float | None
    fan_in: int


def graphs(conn: Conn, queue: str, window: Window) -> list[Graph]:
    rows = conn.execute(FQ.workflow_graphs, {"queue": queue, "sink": SINK_NAME,
                                             "a": window.start, "b": window.end}).fetchall()
    return [Graph(int(r[0]), int(r[1]), r[2], str(r[3]), None if r[5] is None else float(r[5]),
                  int(r[6])) for r in rows]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


@dataclass
class GraphLatency:
    window_start: str
    window_end: str
    graphs: int
    completed: int  # sinks in success
    narrow: int  # sinks that waited for fewer parents than the graph's width
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def latency(found: Sequence[Graph], window: Window, width: int) -> GraphLatency:
    """p50/p99/max of the completed graphs' latencies; how many did not complete."""
    done = [g.latency_s for g in found if g.status == "success" and g.latency_s is not None]
    return GraphLatency(window.start.isoformat(), window.end.isoformat(), len(found),
                        len(done), sum(1 for g in found if g.fan_in != width),
                        _ms(percentile(done, 0.5)), _ms(percentile(done, 0.99)),
                        _ms(max(done) if done else None))


@dataclass
class WorkflowVerdict:
    queue: str
    flood_queue: str
    width: int
    threshold: float = 0.0  # 0: the ratio is printed, not judged
    alone: GraphLatency | None = None
    flooded: GraphLatency | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if not self.alone or not self.flooded or not self.alone.p99_ms or \
                self.flooded.p99_ms is None:
            return None
        return round(self.flooded.p99_ms / self.alone.p99_ms, 2)

    def failures(self) -> list[str]:
        out = list(self.notes)
        for label, g in (("alone", self.alone), ("while flooded", self.flooded)):
            if g is None or g.graphs == 0:
                out.append(f"no workflow graph was measured {label}")
                continue
            if g.completed < g.graphs:
                out.append(f"{g.graphs - g.completed} of {g.graphs} workflow graphs {label} "
                           "did not complete (sink not in success)")
            if g.narrow:
                out.append(f"{g.narrow} sinks {label} did not wait for all {self.width} "
                           "children")
        ratio = self.ratio
        if self.threshold > 0 and ratio is not None and ratio > self.threshold:
            out.append(f"workflow latency p99 while flooded = {ratio:.2f} x alone, over the "
                       f"threshold {self.threshold:.2f} (--workflow-threshold)")
        return out

    def lines(self) -> list[str]:
        out = []
        what = f"workflow graphs (1 -> {self.width} -> 1, queue {self.queue!r})"
        for label, g in (("alone", self.alone), (f"while {self.flood_queue!r} floods",
                                                 self.flooded)):
            if g is None:
                out.append(f"{what} {label}: not measured")
            else:
                out.append(f"{what} {label}: {g.completed}/{g.graphs} completed; root "
                           f"created -> sink finished p50 {g.p50_ms} ms, p99 {g.p99_ms} ms, "
                           f"max {g.max_ms} ms (from the database)")
        ratio = self.ratio
        if ratio is not None:
            judged = (f"threshold {self.threshold:.2f}" if self.threshold > 0
                      else "not judged: --workflow-threshold 0")
            out.append(f"workflow latency: p99 while flooded = {ratio:.2f} x alone ({judged})")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": "workflow", "queue": self.queue, "flood_queue": self.flood_queue,
                "width": self.width, "threshold": self.threshold,
                "alone": self.alone.as_dict() if self.alone else None,
                "flooded": self.flooded.as_dict() if self.flooded else None,
                "ratio": self.ratio, "failures": self.failures()}
