"""The flow-control floods end to end on short runs (`boundq flood --scenario tenants` and
`--scenario ratelimited`, through the same runner as `make flood`), each verdict
recomputed here from the database with independent code.

Locust runs as its own process (the runner starts `python -m locust`); nothing here
imports it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import random
from datetime import datetime, timedelta
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
from boundq.loadtests.flood import FLOOD_DB, FloodOptions, run_flood
from boundq.loadtests.flow_verdict import overtaken_counts, worst_excess
from boundq.reports.flood_figures import queue_completions

pytestmark = pytest.mark.slow


def _p99(values: list[float]) -> float:
    """percentile_cont(0.99): linear between the two closest ranks."""
    xs = sorted(values)
    pos = 0.99 * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _pickups(db_url: str, queue: str, window: dict[str, Any] | None) -> list[float]:
    """Milliseconds from arrival (created_at, or run_at if later) to start, of the queue's
    jobs created in the window the runner reported (None: all of them)."""
    bounds = ((None, None) if window is None else
              (datetime.fromisoformat(window["window_start"]),
               datetime.fromisoformat(window["window_end"])))
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT started_at, created_at, run_at FROM jobs WHERE queue = %s "
            "AND (%s::timestamptz IS NULL OR created_at >= %s) "
            "AND (%s::timestamptz IS NULL OR created_at < %s)",
            (queue, bounds[0], bounds[0], bounds[1], bounds[1])).fetchall()
    return [(s - max(c, r)).total_seconds() * 1000 for s, c, r in rows]


def _count(db_url: str, sql: str, *params: Any) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return int(row[0])


def _run(pg_cluster: EmbeddedPostgres, tmp_path: Path, **kw: Any) -> tuple[dict[str, Any], str,
                                                                          str, Any]:
    out = io.StringIO()
    kw.setdefault("duration_s", 5)
    kw.setdefault("max_queue_depth", 200)
    options = FloodOptions(users=4, spawn_rate=4, job_ms=5, bulk_size=50, drain_timeout_s=90,
                           out_root=tmp_path, database_url=pg_cluster.url("postgres"),
                           alone_s=2.5, **kw)
    result = run_flood(options, stream=out)
    run = json.loads((result.run_dir / "run.json").read_text())
    db_url = dbadmin.database_url(pg_cluster.url("postgres"), FLOOD_DB)
    return run, out.getvalue(), db_url, result


def _check_pickups_and_lost(run: dict[str, Any], printed: str, db_url: str,
                            steady: str) -> dict[str, Any]:
    assert run["verdict"]["lost"] == 0, printed
    assert run["verdict"]["acknowledged"] > 0
    flow = run["result"]["flow"]
    for label in ("alone", "flooded"):
        measured = flow[label]
        mine = _pickups(db_url, steady, measured)
        assert len(mine) == measured["jobs"] >= 3, (label, measured, printed)
        assert _p99(mine) == pytest.approx(measured["p99_ms"], abs=0.2), (label, measured)
    assert flow["ratio"] == pytest.approx(flow["flooded"]["p99_ms"] / flow["alone"]["p99_ms"],
                                          abs=0.01)
    # the verdict fails on isolation exactly when the ratio is over the threshold
    over = flow["ratio"] > flow["threshold"]
    assert any("pickup p99" in f for f in run["result"]["failures"]) == over, run["result"]
    assert (f"isolation: pickup p99 while flooded = {flow['ratio']:.2f} x alone") in printed
    return flow


def test_tenants_flood_isolates_tenant_b(pg_cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    """Tenant A (queue a, its own token) floods with bulk uploads far past capacity; tenant
    B (queue b, its own token) sends 30 creates/s, alone first, then beside A. Admission
    is per tenant: A's backlog fills its own queue (MAX_QUEUE_DEPTH=200, per queue) and A
    gets 429 queue_full, while B's creates are admitted and B keeps flowing (the verdict
    judges it). B's pickup p99 is recomputed from the jobs table; and B does not queue
    behind A's backlog: B's p99 under the flood stays far below the median wait of A's
    own jobs (FIFO across tenants would make them equal)."""
    run, printed, db_url, _ = _run(pg_cluster, tmp_path, scenario="tenants", rate="30",
                                   duration_s=4, max_queue_depth=200)
    flow = _check_pickups_and_lost(run, printed, db_url, "b")
    endpoints = run["result"]["endpoints"]
    a_bulk = next(v for k, v in endpoints.items() if k.startswith("POST /jobs/bulk"))
    b_creates = endpoints["POST /jobs (b)"]
    assert a_bulk["by_status"].get("429", {}).get("requests", 0) > 0, "A never met its limit"
    assert _count(db_url, "SELECT count(*) FROM jobs WHERE queue = 'a'") >= 200
    b_admitted = b_creates["by_status"]["201"]["requests"]
    assert b_admitted >= 0.8 * b_creates["requests"], (b_creates, printed)  # A's full queue
    assert flow["kept"] >= flow["flow_threshold"], (flow, printed)
    assert not any("did not keep flowing" in f for f in run["result"]["failures"]), printed
    # All of A's jobs: its queue fills in its first few uploads, and on a slowed machine
    # those can be all it got in before the measured window's trimmed start.
    a_waits = _pickups(db_url, "a", None)
    assert len(a_waits) >= 200, "tenant A did not flood"
    a_median = sorted(a_waits)[len(a_waits) // 2]
    assert flow["flooded"]["p99_ms"] * 3 < a_median, (flow["flooded"], a_median, printed)
    assert flow["flooded"]["overtaken_p50"] is not None and "started while one waited" in printed
    with psycopg.connect(db_url, autocommit=True) as conn:
        queues = {r[0] for r in conn.execute("SELECT DISTINCT queue FROM jobs").fetchall()}
    assert queues == {"a", "b"}, queues  # every job went where its tenant's token may write


def test_ratelimited_flood_holds_the_rate(pg_cluster: EmbeddedPostgres, tmp_path: Path) -> None:
    """The kind `noop` limited to 25/s burst 5 and flooded beside unlimited sleep jobs:
    every window [s_i, s_j] of its starts before the lift (recounted here by brute force)
    holds at most burst + rate x (s_j - s_i); the limit was reached; and the unlimited
    jobs did not wait behind the limited backlog."""
    rate, burst = 25.0, 5
    run, printed, db_url, result = _run(pg_cluster, tmp_path, scenario="ratelimited",
                                        rate="30", limit_rate=rate, limit_burst=burst,
                                        # a depth the limited backlog does not fill in
                                        # 5 s: the door's shedding (one admin token for
                                        # both) stays out of the way
                                        max_queue_depth=5000)
    flow = _check_pickups_and_lost(run, printed, db_url, "default")
    with psycopg.connect(db_url, autocommit=True) as conn:
        lift = conn.execute("SELECT changed_at FROM job_limit_changes WHERE scope = 'kind' "
                            "AND name = 'noop' AND rate_per_s IS NULL").fetchone()
        assert lift is not None, "the runner did not lift the limit after the load"
        starts = [r[0] for r in conn.execute(
            "SELECT started_at FROM jobs WHERE kind = 'noop' AND started_at < %s "
            "ORDER BY started_at", (lift[0],)).fetchall()]
        waits = [r[0] * 1000 for r in conn.execute(
            "SELECT extract(epoch FROM started_at - created_at)::float8 FROM jobs "
            "WHERE kind = 'noop'").fetchall()]
    secs = [(t - starts[0]).total_seconds() for t in starts]
    worst = max(j - i + 1 - rate * (secs[j] - secs[i])
                for i in range(len(secs)) for j in range(i, len(secs)))
    assert worst <= burst + 1e-6, (worst, printed)
    assert flow["rate"]["starts"] == len(secs)
    assert flow["rate"]["worst_excess"] == pytest.approx(worst, abs=0.01)
    assert len(secs) > burst + 2 * rate, "the limit was never reached: proves nothing"
    achieved = (len(secs) - burst) / secs[-1]
    assert 0.6 * rate <= achieved <= rate * 1.01, (achieved, printed)  # the limit bound it
    assert flow["rate"]["held"] is True
    assert flow["flooded"]["p99_ms"] * 3 < sorted(waits)[len(waits) // 2], (flow, printed)
    frame = pd.read_csv(result.run_dir / "queue_completions.csv")  # the per-queue figure's data
    assert set(frame["queue"]) == {"default", "limited"}
    assert frame.loc[frame["queue"] == "limited", "finished"].sum() == _count(
        db_url, "SELECT count(*) FROM jobs WHERE queue = 'limited'")
    fig = queue_completions(frame, run["result"]["flow"]["phases"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [
        "queue default", "queue limited"]


def test_worst_window_excess_against_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(200):
        secs = sorted(rng.uniform(0, 3) for _ in range(rng.randint(1, 40)))
        rate = rng.uniform(1, 30)
        brute = max(j - i + 1 - rate * (secs[j] - secs[i])
                    for i in range(len(secs)) for j in range(i, len(secs)))
        assert worst_excess(secs, rate) == pytest.approx(brute)
    assert worst_excess([], 5.0) == 0.0
    assert worst_excess([0.0, 0.0, 0.0], 5.0) == 3.0  # one claim of three: a burst of 3


def test_overtaken_counts_against_brute_force() -> None:
    rng = random.Random(11)
    origin = datetime(2026, 1, 1)
    for _ in range(100):
        others = sorted(origin + timedelta(milliseconds=rng.randint(0, 500))
                        for _ in range(rng.randint(0, 40)))
        waits = []
        for _ in range(rng.randint(1, 30)):
            arrived = origin + timedelta(milliseconds=rng.randint(0, 400))
            waits.append((arrived, arrived + timedelta(milliseconds=rng.randint(0, 100))))
        brute = sorted(float(sum(1 for o in others if a < o < s)) for a, s in waits)
        p50, p99, slowest = overtaken_counts(waits, others)
        assert p50 == pytest.approx(round(_p99_of(brute, 0.5), 1))
        assert p99 == pytest.approx(round(_p99_of(brute, 0.99), 1))
        longest = sorted(waits, key=lambda w: w[1] - w[0])[-max(1, len(waits) // 10):]
        counts = [sum(1 for o in others if a < o < s) for a, s in longest]
        assert slowest == pytest.approx(round(sum(counts) / len(counts), 1))
    assert overtaken_counts([], []) == (None, None, None)


def _p99_of(xs: list[float], q: float) -> float:
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
