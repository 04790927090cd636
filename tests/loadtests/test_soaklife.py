"""`boundq soak-life`: its plan and verdict on their own, and the --quick form end to end
against the test cluster (real `boundq worker` processes, the producer, the pinning
session), checked against what the database holds afterwards."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from boundq.cli import main
from boundq.core import dbadmin
from boundq.core.pgembed import EmbeddedPostgres
from boundq.loadtests.soaklife_machine import STALL_DIR
from boundq.loadtests.soaklife_output import read_rows
from boundq.loadtests.soaklife_plan import (
    DRAIN,
    PRESSURE,
    SWEEP_PERIOD_MAX_S,
    Plan,
    PlanError,
    SoakOptions,
    make_plan,
    quick,
)
from boundq.loadtests.soaklife_verdict import judge


# --- the plan and the verdict, no database --------------------------------------------
def test_the_default_plan_is_an_hour_of_minutes() -> None:
    plan = make_plan(SoakOptions())
    assert [(p.name, p.intervals, p.retention) for p in plan.phases] == [
        ("retention-on", 20, True), ("retention-off", 20, False), ("pressure", 10, False),
        ("recovery", 10, False)]
    assert plan.seconds == 3600 and plan.baseline_intervals == 5
    assert plan.retention_s == 120
    assert plan.flat_reference_index() == 2  # ends at 180 s, after 120 s + a sweep


def test_the_quick_plan_fits_the_retention_window_and_its_checks() -> None:
    options = quick(SoakOptions())
    plan = make_plan(options)
    assert [(p.name, p.intervals) for p in plan.phases] == [
        ("retention-on", 15), ("retention-off", 3), ("pressure", 3), ("recovery", 3)]
    assert (plan.seconds, plan.interval_s, plan.retention_s, options.rate) == (24, 1, 5, 200)
    assert plan.baseline_intervals == 2 and plan.settle_s == 0.25
    # the window filled and swept (5 s + 6.5 s) before the phase's last intervals
    assert plan.flat_reference_index() == 11 < plan.phases[0].end - 2
    assert quick(SoakOptions(rate=50.0)).rate == 50.0


def test_a_retention_shorter_than_an_interval_is_refused() -> None:
    with pytest.raises(PlanError, match="--retention 30s"):
        make_plan(SoakOptions(retention_s=30))
    with pytest.raises(PlanError, match="at least 12"):
        make_plan(SoakOptions(minutes=5))
    assert main(["soak-life", "--minutes", "5"]) == 2


def _row(index: int, phase: str, tp: float, p99: float, size: float = 1e6) -> dict[str, Any]:
    return {"interval": index, "phase": phase, "completions_per_s": tp,
            "completions": int(tp * 60), "pickup_p99_ms": p99, "jobs_total_bytes": size,
            "finished_rows": 1000, "xmin_age": 0, "oldest_xact_s": 0.0, "waiting": 0,
            "jobs_dead_tup": 0, "jobs_claim_idx_bytes": 1, "jobs_autovacuum_count": 0}


def _rows(plan: Any, tp: dict[int, float] | None = None, p99: dict[int, float] | None = None
          ) -> list[dict[str, Any]]:
    return [_row(i, plan.phase_of(i).name, (tp or {}).get(i, 1000.0),
                 (p99 or {}).get(i, 20.0)) for i in range(plan.intervals)]


def _judge(plan: Any, rows: list[dict[str, Any]], missing: int = 0) -> Any:
    produced = sum(r["completions"] for r in rows) + missing
    return judge(rows, plan, 0.1, 1.2, produced, drained=True, interrupted=False)


def test_the_verdict_judges_each_interval_against_the_baseline() -> None:
    plan = make_plan(SoakOptions())
    assert _judge(plan, _rows(plan)).passed
    # the warm-up interval is not judged, nor is the p99 under pressure
    verdict = _judge(plan, _rows(plan, tp={0: 10.0}, p99={0: 900.0, 45: 500.0}))
    assert verdict.passed, verdict.failures
    assert verdict.facts["pressure"]["pickup_p99_ms_max"] == 500.0
    # but the throughput under pressure is, and the p99 everywhere else
    verdict = _judge(plan, _rows(plan, tp={45: 800.0}, p99={30: 23.0}))
    assert not verdict.passed
    assert verdict.facts["throughput"]["outside_intervals"] == [45]
    assert verdict.facts["p99"]["over_intervals"] == [30]
    assert "machine" not in verdict.facts  # rows without the machine's readings


def test_the_verdict_names_the_machine_waits_of_each_p99_miss() -> None:
    plan = make_plan(SoakOptions())
    rows = _rows(plan, p99={30: 90.0})
    for r in rows:
        r["machine_cpu_wait_pct"], r["machine_io_wait_pct"] = 30.0, 1.0
        r["machine_io_stall_max_ms"] = 20.0
    rows[30]["machine_io_wait_pct"], rows[30]["machine_io_stall_max_ms"] = 12.5, 566.0
    rows[0]["machine_cpu_wait_pct"] = 99.0  # the warm-up: not described
    verdict = _judge(plan, rows)
    assert verdict.facts["machine"] == {
        "cpu_wait_pct_median": 30.0, "io_wait_pct_median": 1.0,
        "io_stall_max_ms_median": 20.0,
        "over_p99": [{"interval": 30, "cpu_wait_pct": 30.0, "io_wait_pct": 12.5,
                      "io_stall_max_ms": 566.0}]}
    line = next(x for x in verdict.lines if x.startswith("machine"))
    assert "30-30%" in line and "1-12%" in line and "20-566 ms" in line
    assert "30 (CPU 30%, I/O 12%, worst second 566 ms)" in line
    # a table that keeps growing with retention on, and a job not counted
    rows = _rows(plan)
    for r in rows[:20]:
        r["jobs_total_bytes"] = 1e6 * (1 + r["interval"])
    verdict = _judge(plan, rows, missing=1)
    assert verdict.facts["flat"]["ratio"] == pytest.approx(20 / 3)
    assert any("grew" in f for f in verdict.failures)
    assert any("differ" in f for f in verdict.failures)


# --- the quick form, end to end -------------------------------------------------------
def _count(url: str, query: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class QuickRun:
    options: SoakOptions
    plan: Plan
    result: Any
    printed: str
    db_url: str


@pytest.fixture(scope="module")
def quick_run(pg_cluster: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory
              ) -> QuickRun:
    """One --quick run for the module (24 s of load); its figures are drawn by the tests
    that check them."""
    from boundq.loadtests.soaklife import SOAK_DB, run_soak

    base = pg_cluster.url("postgres")
    options = quick(SoakOptions(out_root=tmp_path_factory.mktemp("runs"), database_url=base,
                                figures=False))
    out = io.StringIO()
    result = run_soak(options, out=out)
    return QuickRun(options, make_plan(options), result, out.getvalue(),
                    dbadmin.database_url(base, SOAK_DB))


@pytest.mark.slow
def test_quick_soak_life(quick_run: QuickRun) -> None:
    plan, result, printed, db_url = (quick_run.plan, quick_run.result, quick_run.printed,
                                     quick_run.db_url)
    rows = read_rows(result.run_dir)
    meta = json.loads((result.run_dir / "run.json").read_text())

    # every phase has its intervals, in order, back to back; then one drain row
    phases = Counter(r["phase"] for r in rows)
    assert phases == {p.name: p.intervals for p in plan.phases} | {"drain": 1}, phases
    assert [int(r["interval"]) for r in rows] == list(range(plan.intervals + 1))
    for before, after in itertools.pairwise(rows):
        assert float(after["t_start_s"]) == pytest.approx(float(before["t_end_s"]), abs=0.01)
    assert printed.count(f"/{plan.intervals}] ") == plan.intervals

    # every interval of every phase has its readings: work done and its pickup, the sizes,
    # the statistics, the queue and the horizon (a reading left empty fails here)
    readings = ("completions_per_s", "pickup_p50_ms", "pickup_p99_ms", "waiting",
                "finished_rows", "jobs_total_bytes", "jobs_claim_idx_bytes",
                "job_attempts_total_bytes", "jobs_dead_tup", "jobs_autovacuum_count",
                "xmin_age", "oldest_xact_s", "sampled_at", "machine_load_1m",
                *(["machine_cpu_wait_pct", "machine_io_wait_pct", "machine_io_stall_max_ms"]
                  if (STALL_DIR / "cpu").exists() else []))
    for r in rows:
        if r["phase"] != DRAIN:
            assert int(r["completions"]) > 0 and int(r["offered"]) > 0, r
        empty = [c for c in readings if r[c] == "" and not (c.startswith("pickup_")
                                                             and r["phase"] == DRAIN)]
        assert not empty, (r["interval"], r["phase"], empty)

    # the counts agree with the database: every job inserted was counted once, interval
    # by interval; the tallies saw as many successes and dead letters (the `fail` jobs);
    # what is not in the table was deleted by retention, dead letters too (through
    # FAILED_RETENTION_SECONDS), with their attempt rows
    counted = sum(int(r["completions"]) for r in rows)
    success_rows = _count(db_url, "SELECT count(*) FROM jobs WHERE status = 'success'")
    failed_rows = _count(db_url, "SELECT count(*) FROM jobs WHERE status = 'failed'")
    succeeded = _count(db_url, "SELECT sum(succeeded) FROM job_tallies")
    dead = _count(db_url, "SELECT sum(dead) FROM job_tallies")
    assert counted == meta["produced"] == succeeded + dead > 0
    assert dead == meta["produced_failing"] > 0
    kept = success_rows + failed_rows
    assert _count(db_url, "SELECT count(*) FROM jobs") == kept
    assert _count(db_url, "SELECT count(*) FROM job_attempts") == kept
    assert _count(db_url, "SELECT sum(success_n) FROM job_tallies") == success_rows
    assert _count(db_url, "SELECT sum(failed_n) FROM job_tallies") == failed_rows
    totals = meta["totals"]
    assert totals["deleted_by_retention"] == counted - kept
    assert succeeded > success_rows > 0 and dead > failed_rows > 0
    assert int(rows[-1]["finished_rows"]) == kept

    # retention on: once its window has filled and been swept, the rows kept never pass
    # what finished within that window (and an interval more); retention off keeps every
    # row that finished after the workers with retention stopped
    window = math.ceil((plan.retention_s + SWEEP_PERIOD_MAX_S) / plan.interval_s) + 1
    judged = 0
    for i, r in enumerate(rows):
        if r["phase"] == "retention-on" and i >= window:
            recent = sum(int(x["completions"]) for x in rows[i - window + 1:i + 1])
            assert int(r["finished_rows"]) <= recent, (i, r["finished_rows"], recent)
            judged += 1
    assert judged >= 2
    stopped = next(i for i, r in enumerate(rows) if "retention stopped" in r["event"])
    assert rows[stopped]["phase"] != "retention-on" and stopped < plan.intervals - 1
    kept_after = sum(int(r["completions"]) for r in rows[stopped + 1:])
    assert kept_after > 0 and kept >= kept_after

    # the pressure phase pinned the horizon, and its end released it
    held = [r for r in rows if r["phase"] == "pressure"]
    assert "pinned" in held[0]["event"]
    assert float(held[-1]["oldest_xact_s"]) >= (len(held) - 1) * plan.interval_s
    assert int(held[-1]["xmin_age"]) > int(held[0]["xmin_age"])
    after = [r for r in rows if r["phase"] == "recovery"]
    assert "released" in after[0]["event"]
    assert all(float(r["oldest_xact_s"]) < float(held[-1]["oldest_xact_s"]) for r in after)

    # the verdict: the one in run.json is what judge() makes of intervals.csv, over the
    # plan's intervals (warm-up, baseline, the later ones, pressure apart), and the
    # accounting holds (the quick form's throughput and p99 are not asserted: 1-second
    # intervals on a shared machine are noise)
    verdict = meta["verdict"]
    again = judge(rows, plan, quick_run.options.tolerance, quick_run.options.flat_ratio,
                  meta["produced"], drained=True, interrupted=False)
    assert json.loads(json.dumps(again.as_dict())) == verdict
    assert verdict["passed"] == result.verdict.passed == again.passed
    assert {"baseline", "throughput", "p99", "flat", "pressure", "accounting"} <= set(verdict)
    later = plan.intervals - 1 - plan.baseline_intervals
    pressure = next(p.intervals for p in plan.phases if p.name == PRESSURE)
    assert verdict["baseline"]["intervals"] == plan.baseline_intervals
    assert verdict["throughput"]["judged"] == later
    assert verdict["p99"]["judged"] == later - pressure
    assert verdict["pressure"]["intervals"] == pressure
    assert verdict["accounting"] == {"produced": counted, "counted": counted, "drained": True}
    assert verdict["flat"]["reference_interval"] == plan.flat_reference_index()
    assert not [f for f in verdict["failures"]
                if "differ" in f or "drain" in f or "interrupted" in f or "not judged" in f]
    assert ("PASSED" if result.verdict.passed else "FAILED: ") in printed


@pytest.mark.slow
def test_the_quick_run_writes_its_figures(quick_run: QuickRun) -> None:
    pytest.importorskip("matplotlib")
    from boundq.reports.soaklife_figures import write_soak_figures

    paths = write_soak_figures(quick_run.result.run_dir)
    assert sorted(p.name for p in paths) == ["soak_sizes.png", "soak_throughput.png",
                                             "soak_vacuum.png"]
    for path in paths:
        assert path.stat().st_size > 10_000


@pytest.mark.slow
def test_the_notebook_draws_the_soak_run(quick_run: QuickRun,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from tests.helpers import REPO_ROOT

    monkeypatch.setenv("BOUNDQ_RUNS", str(quick_run.options.out_root))
    path = REPO_ROOT / "notebooks" / "runs.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ})
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # the run folder holds only the soak-life run: its three figures are all there are
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3, f"{len(images)} figures rendered"
    text = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert f"'passed': {quick_run.result.verdict.passed}" in text
