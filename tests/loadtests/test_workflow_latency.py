"""The workflow scenario's latency measurement (loadtests/workflow_verdict.py) on graphs
written here with known timestamps: each graph is found from its sink through
job_dependencies, its latency is the sink's finished_at - the root's created_at, and
the percentiles are PostgreSQL's percentile_cont."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from boundq.loadtests import workflow_verdict as wv
from boundq.loadtests.pace import Window

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _job(conn: psycopg.Connection[Any], name: str, created_s: float, finished_s: float | None,
         queue: str = "workflow") -> int:
    status = "new" if finished_s is None else "success"
    row = conn.execute(
        "INSERT INTO jobs (name, queue, status, attempts, created_at, started_at, finished_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (name, queue, status, 0 if finished_s is None else 1, T0 + timedelta(seconds=created_s),
         None if finished_s is None else T0 + timedelta(seconds=created_s),
         None if finished_s is None else T0 + timedelta(seconds=finished_s))).fetchone()
    assert row is not None
    return int(row[0])


def _graph(conn: psycopg.Connection[Any], created_s: float, sink_done_s: float | None,
           width: int = 3, linked: int | None = None, queue: str = "workflow") -> int:
    """A root, `width` children, a sink waiting for `linked` (default all) of them; the
    children finish a little after the root; returns the root's id."""
    root = _job(conn, wv.ROOT_NAME, created_s, created_s + 0.01, queue)
    kids = [_job(conn, wv.CHILD_NAME, created_s, created_s + 0.02, queue) for _ in range(width)]
    sink = _job(conn, wv.SINK_NAME, created_s, sink_done_s, queue)
    for kid in kids:
        conn.execute("INSERT INTO job_dependencies (child_id, parent_id) VALUES (%s, %s)",
                     (kid, root))
    for kid in kids[:linked if linked is not None else width]:
        conn.execute("INSERT INTO job_dependencies (child_id, parent_id) VALUES (%s, %s)",
                     (sink, kid))
    return root


def test_graph_latency_from_the_database(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # latencies 0.5, 1.0, 1.5, 2.0 and 10 s; created at 1, 2, 3, 4, 5 s
        roots = [_graph(conn, c, c + lat) for c, lat in
                 ((1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0), (5, 10.0))]
        _graph(conn, 0.5, 1.0)  # before the window
        _graph(conn, 2.5, 3.0, queue="other")  # another queue
        window = Window(T0 + timedelta(seconds=1), T0 + timedelta(seconds=6))
        found = wv.graphs(conn, "workflow", window)
        assert [g.root_id for g in found] == roots
        assert [g.latency_s for g in found] == pytest.approx([0.5, 1.0, 1.5, 2.0, 10.0])
        measured = wv.latency(found, window, 3)
        assert (measured.graphs, measured.completed, measured.narrow) == (5, 5, 0)
        assert measured.p50_ms == 1500.0
        assert measured.p99_ms == pytest.approx(2000 + 0.96 * 8000, abs=0.1)  # pos 3.96
        assert measured.max_ms == 10000.0
        row = conn.execute(  # the same percentiles by PostgreSQL
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY x)"
            " FROM unnest(ARRAY[0.5, 1.0, 1.5, 2.0, 10.0]::float8[]) AS x").fetchone()
        assert row is not None
        assert (measured.p50_ms, measured.p99_ms) == pytest.approx((row[0] * 1000,
                                                                    row[1] * 1000), abs=0.1)


def test_unfinished_and_narrow_graphs_fail_the_verdict(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        _graph(conn, 1, 1.4)
        _graph(conn, 2, None)  # its sink never finished
        _graph(conn, 3, 3.2, linked=2)  # its sink waited for two of three children
        window = Window(T0, T0 + timedelta(seconds=10))
        measured = wv.latency(wv.graphs(conn, "workflow", window), window, 3)
    assert (measured.graphs, measured.completed, measured.narrow) == (3, 2, 1)
    assert measured.p50_ms == pytest.approx(300.0, abs=0.1)  # of the two that finished
    verdict = wv.WorkflowVerdict("workflow", "default", 3, alone=measured, flooded=measured)
    failures = verdict.failures()
    assert any("1 of 3 workflow graphs alone did not complete" in f for f in failures)
    assert any("1 sinks while flooded did not wait for all 3" in f for f in failures)


def test_threshold_judges_the_ratio_only_when_set() -> None:
    def lat(p99: float) -> wv.GraphLatency:
        return wv.GraphLatency("a", "b", 4, 4, 0, p99 / 2, p99, p99)
    verdict = wv.WorkflowVerdict("workflow", "default", 100, 0.0, lat(100.0), lat(450.0))
    assert verdict.ratio == 4.5
    assert verdict.failures() == []
    assert "not judged" in verdict.lines()[-1]
    verdict.threshold = 4.0
    assert verdict.failures() == ["workflow latency p99 while flooded = 4.50 x alone, over "
                                  "the threshold 4.00 (--workflow-threshold)"]
    verdict.threshold = 5.0
    assert verdict.failures() == []


def test_percentile_is_percentile_cont() -> None:
    assert wv.percentile([], 0.99) is None
    assert wv.percentile([7.0], 0.99) == 7.0
    assert wv.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert wv.percentile(list(map(float, range(101))), 0.99) == pytest.approx(99.0)
