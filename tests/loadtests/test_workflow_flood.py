"""The workflow flood end to end on a short run (`boundq flood --scenario workflow`, through
the same runner as `make flood`): fan-out/fan-in graphs alone, then beside the create
flood; the verdict's inputs recomputed here from the database with independent code.

Locust runs as its own process (the runner starts `python -m locust`); nothing here
imports it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[load]')", allow_module_level=True)
pytest.importorskip("matplotlib")
pytest.importorskip("pandas")

import pandas as pd

from boundq.core import dbadmin
from boundq.core.pgembed import EmbeddedPostgres
from boundq.loadtests.flood import FLOOD_DB, FloodError, FloodOptions, run_flood
from boundq.reports.flood_figures import workflow_latency
from boundq.reports.flood_report import write_flood_report

pytestmark = pytest.mark.slow
FAN_OUT = 100


def _p(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _graph_latencies(db_url: str, window: dict[str, Any]) -> dict[int, float | None]:
    """root id -> ms from the root's creation to its sink's finish, walking the edges in
    Python: roots are the jobs with no parent and children, sinks those with FAN_OUT."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        jobs = {r[0]: r[1:] for r in conn.execute(
            "SELECT id, created_at, finished_at, status FROM jobs WHERE queue = 'workflow'")}
        edges = conn.execute("SELECT child_id, parent_id FROM job_dependencies").fetchall()
    parents: dict[int, list[int]] = defaultdict(list)
    for child, parent in edges:
        parents[child].append(parent)
    a, b = (datetime.fromisoformat(window[k]) for k in ("window_start", "window_end"))
    out: dict[int, float | None] = {}
    for job_id, ps in parents.items():
        if len(ps) != FAN_OUT:
            continue  # a child (one parent)
        roots = {r for p in ps for r in parents[p]}
        assert len(roots) == 1, (job_id, roots)  # one graph: every child of one root
        root = roots.pop()
        created = jobs[root][0]
        if a <= created < b:
            done, status = jobs[job_id][1], jobs[job_id][2]
            out[root] = ((done - created).total_seconds() * 1000 if status == "success"
                         else None)
    return out


def test_workflow_flood_measures_graph_latency(pg_cluster: EmbeddedPostgres,
                                               tmp_path: Path) -> None:
    out = io.StringIO()
    options = FloodOptions(scenario="workflow", users=4, spawn_rate=4, job_ms=5, duration_s=5,
                           rate="4", alone_s=2.5, max_queue_depth=2000, drain_timeout_s=90,
                           out_root=tmp_path, database_url=pg_cluster.url("postgres"))
    result = run_flood(options, stream=out)
    printed = out.getvalue()
    run = json.loads((result.run_dir / "run.json").read_text())
    db_url = dbadmin.database_url(pg_cluster.url("postgres"), FLOOD_DB)
    assert run["verdict"]["lost"] == 0, printed
    flow = run["result"]["flow"]
    assert flow["scenario"] == "workflow" and flow["width"] == FAN_OUT
    for label in ("alone", "flooded"):
        measured = flow[label]
        mine = _graph_latencies(db_url, measured)
        assert len(mine) == measured["graphs"] >= 3, (label, measured, printed)
        assert None not in mine.values(), (label, mine)  # every graph completed
        assert measured["completed"] == measured["graphs"] and measured["narrow"] == 0
        values = [v for v in mine.values() if v is not None]
        assert _p(values, 0.5) == pytest.approx(measured["p50_ms"], abs=0.2)
        assert _p(values, 0.99) == pytest.approx(measured["p99_ms"], abs=0.2)
        # a graph takes at least its three stages of 5 ms
        assert min(values) >= 15, (label, values)
    assert flow["ratio"] == pytest.approx(flow["flooded"]["p99_ms"] / flow["alone"]["p99_ms"],
                                          abs=0.01)
    assert run["result"]["failures"] == [], printed  # threshold 0: the ratio is not judged
    assert f"workflow latency: p99 while flooded = {flow['ratio']:.2f} x alone" in printed
    with psycopg.connect(db_url, autocommit=True) as conn:
        creates = conn.execute("SELECT count(*) FROM jobs WHERE queue = 'default' AND "
                               "created_at >= %s", (datetime.fromisoformat(
                                   flow["flooded"]["window_start"]),)).fetchone()
    assert creates is not None and creates[0] > 100, "the create flood did not run"
    frame = pd.read_csv(result.run_dir / "workflow_graphs.csv")  # the figure's data
    assert len(frame) >= flow["alone"]["graphs"] + flow["flooded"]["graphs"]
    assert set(frame["status"]) == {"success"}
    fig = workflow_latency(frame, flow["phases"])
    assert fig.axes[0].get_ylabel() == "root created -> sink finished (ms)"
    summary = write_flood_report(result.run_dir).read_text()
    assert "## Workflow" in summary and "![workflow latency](flood-workflow.png)" in summary
    assert (result.run_dir / "flood-workflow.png").stat().st_size > 0
    assert f"p99 {flow['flooded']['p99_ms']} ms" in summary


@pytest.mark.parametrize("fan_out", [0, 101])
def test_fan_out_outside_the_dependency_limit_is_refused(tmp_path: Path, fan_out: int) -> None:
    """The sink names every child in depends_on_index (at most 100): refused before any
    database or process is touched."""
    options = FloodOptions(scenario="workflow", fan_out=fan_out, out_root=tmp_path,
                           database_url="postgresql://127.0.0.1:1/never")
    with pytest.raises(FloodError, match="--fan-out must be between 1 and 100"):
        run_flood(options, stream=io.StringIO())
    assert list(tmp_path.iterdir()) == []
