"""The workflow scenario of `boundq flood`: fan-out/fan-in graphs beside the create flood.

  workflow  one user submits a graph every 1/--rate seconds (default 1 a second), each as
            ONE atomic bulk upload (POST /jobs/bulk?atomic=true) into queue `workflow`: a
            root, --fan-out children (depends_on_index [0]) and a sink waiting for all of
            them (depends_on_index [1..N]); every job the run's job (`sleep` --job-ms). A
            refused upload (429, 503) is sent again within its slot. The usual create
            flood (CreateUser, single creates into `default`) runs beside it.
            Judged from the database: root created -> sink finished per graph, p50 and
            p99, alone (the graphs by themselves first, --alone-seconds, then let finish)
            against while flooded; every graph completes (loadtests/workflow_verdict.py).

It reuses the flow scenarios' plan (loadtests/flow_scenarios.py): the same alone phase,
tokens and per-queue completions figure; only the steady user and the verdict differ.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from boundq.loadtests import flow_verdict as fv
from boundq.loadtests import workflow_verdict as wv
from boundq.loadtests.flow_scenarios import FlowPlan
from boundq.loadtests.flow_sql import FQ
from boundq.loadtests.pace import Window

WORKFLOW_QUEUE = "workflow"
DEFAULT_GRAPH_RATE = 1.0  # graphs/s when --rate is not given
DEFAULT_FAN_OUT = 100


def graph_items(queue: str, fan_out: int, job: dict[str, Any]) -> list[dict[str, Any]]:
    """One graph as bulk items: root at 0, children at 1..fan_out, the sink last."""
    def item(name: str, parents: list[int]) -> dict[str, Any]:
        return {**job, "name": name, "queue": queue,
                **({"depends_on_index": parents} if parents else {})}
    return ([item(wv.ROOT_NAME, [])] + [item(wv.CHILD_NAME, [0]) for _ in range(fan_out)]
            + [item(wv.SINK_NAME, list(range(1, fan_out + 1)))])


@dataclass
class WorkflowPlan(FlowPlan):
    fan_out: int = DEFAULT_FAN_OUT
    default_rate: float = DEFAULT_GRAPH_RATE
    steady_class: str = "WorkflowUser"
    rate_unit: str = "graphs/s"

    @property
    def flood_queue(self) -> str:
        return "default"  # CreateUser sends no queue

    @property
    def steady_queue(self) -> str:
        return WORKFLOW_QUEUE

    def server_env(self) -> dict[str, str]:
        return {"API_TOKEN": self.admin_token}

    def locust_env(self) -> dict[str, str]:
        return {"API_TOKEN": self.admin_token, "FLOOD_STEADY_QUEUE": WORKFLOW_QUEUE,
                "FLOOD_STEADY_TOKEN": self.admin_token,
                "FLOOD_STEADY_RATE": str(self.steady_rate),
                "FLOOD_FAN_OUT": str(self.fan_out)}

    def describe(self) -> str:
        return (f"{self.steady_rate:g} graphs/s (1 -> {self.fan_out} -> 1, one atomic bulk "
                f"upload each) into queue {WORKFLOW_QUEUE!r} beside the create flood into "
                "'default'")

    def configure(self, base: str) -> list[str]:
        return []

    def settled(self, conn: psycopg.Connection[Any]) -> bool:
        """The alone phase's graphs have all finished (before the flood starts)."""
        row = conn.execute(FQ.workflow_unfinished, {"queue": WORKFLOW_QUEUE}).fetchone()
        return row is not None and int(row[0]) == 0

    def measure(self, db_url: str, alone: tuple[datetime, datetime] | None,
                load_start: datetime, load_end: datetime) -> wv.WorkflowVerdict:
        verdict = wv.WorkflowVerdict(WORKFLOW_QUEUE, self.flood_queue, self.fan_out,
                                     self.threshold)
        with psycopg.connect(db_url, autocommit=True,
                             application_name="boundq-flood-verify") as conn:
            if alone is not None:
                window = Window(*alone)
                verdict.alone = wv.latency(wv.graphs(conn, WORKFLOW_QUEUE, window), window,
                                           self.fan_out)
            flooded = fv.flood_window(conn, self.flood_queue, load_start, load_end)
            if flooded is None:
                verdict.notes.append(f"queue {self.flood_queue!r} got no job: no flood")
            else:
                verdict.flooded = wv.latency(wv.graphs(conn, WORKFLOW_QUEUE, flooded),
                                             flooded, self.fan_out)
        return verdict


def write_graphs(path: Path, db_url: str, origin: datetime, end: datetime) -> int:
    """Every graph whose root was created from `origin` on, for the latency figure:
    seconds since origin of its root's creation, its latency in ms, its sink's status."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        found = wv.graphs(conn, WORKFLOW_QUEUE, Window(origin, end))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["root_id", "created_s", "latency_ms", "status"])
        for g in found:
            writer.writerow([g.root_id, round((g.root_created_at - origin).total_seconds(), 3),
                             "" if g.latency_s is None else round(g.latency_s * 1000, 1),
                             g.status])
    return len(found)
