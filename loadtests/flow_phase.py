"""The scenario plans with a steady user (tenants, ratelimited, workflow): which plan a
flood runs, and the steady user's phase alone before the flood."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from boundq.loadtests import flow_scenarios as flows
from boundq.loadtests import pace as pacing
from boundq.loadtests import processes as procs
from boundq.loadtests.phases import FloodRun
from boundq.loadtests.workflow_scenario import WorkflowPlan

if TYPE_CHECKING:
    from boundq.loadtests.flood import FloodOptions

SETTLE_LIMIT_S = 120.0  # the alone phase's graphs must finish within this


def plan_for(o: FloodOptions) -> flows.FlowPlan | None:
    if o.scenario == "workflow":
        return WorkflowPlan(o.scenario, 0.0, threshold=o.workflow_threshold,
                            fan_out=o.fan_out)
    if o.scenario in flows.FLOW_SCENARIOS:
        return flows.FlowPlan(o.scenario, 0.0, o.limit_rate, o.limit_burst,
                              o.isolation_threshold, o.flow_threshold)
    return None


def alone_phase(run: FloodRun, o: FloodOptions, flow: flows.FlowPlan, base: str,
                run_dir: Path, locust_vars: dict[str, str], db_url: str
                ) -> tuple[datetime, datetime]:
    """The steady user alone for --alone-seconds from the first start of one of its jobs
    (a queue new to the workers waits for the scout's next look), its own Locust run,
    tallies and ids in run_dir/alone; timed by the database. The window ends when its
    user stops; its work is then let finish (flow.settled) before the flood starts."""
    run.say(f"alone: queue {flow.steady_queue!r} by itself for {o.alone_s:.0f} s "
            f"({flow.steady_rate:g} {flow.rate_unit})")
    folder = run_dir / "alone"
    env = procs.child_env(locust_vars | {"FLOOD_OUT_DIR": str(folder.resolve())})
    limit_s = o.alone_s + 120
    argv = procs.locust_argv(o.scenario, base, folder / "locust", 1, 1, limit_s, None,
                             classes=(flow.steady_class,))
    folder.mkdir()
    start = pacing.db_now(db_url)
    with psycopg.connect(db_url, autocommit=True,
                         application_name="boundq-flood-sampler") as conn:
        def done() -> bool:
            return flows.served_for(conn, flow.steady_queue, start) >= o.alone_s
        if not run.alone_phase(argv, env, run_dir / "locust-alone.log", done, limit_s):
            run.notes.append("the steady queue's alone phase did not complete")
        end = pacing.db_now(db_url)
        limit = time.monotonic() + SETTLE_LIMIT_S
        while not flow.settled(conn):
            if time.monotonic() > limit:
                run.notes.append("the alone phase's work did not finish within "
                                 f"{SETTLE_LIMIT_S:.0f} s")
                break
            if run.interrupts.wait(0.1):
                run.tick("load")
                break
    return start, end
