"""`make bench`'s drain: through `boundq worker` (the command users run), timed by the
database from the first claim to the last finish, CPU and memory read from outside the
drain's process tree."""

from __future__ import annotations

import importlib.util
from typing import Any

import psycopg
import pytest

from boundq.core import dbadmin
from boundq.core.pgembed import EmbeddedPostgres
from boundq.reports import drain
from boundq.reports.drain_run import BENCH_DB, drain_cli, prepare
from boundq.reports.drain_summary import round_ratios

pytestmark = pytest.mark.slow

JOBS = 2000


@pytest.fixture
def base(pg_cluster: EmbeddedPostgres) -> str:
    return pg_cluster.url("postgres")


def _db_span(url: str) -> tuple[int, float, int]:
    """(successes, max(finished_at) - min(started_at) in seconds, jobs not finished)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'success'), "
            "extract(epoch FROM max(finished_at) - min(started_at)), "
            "count(*) FILTER (WHERE finished_at IS NULL) FROM jobs").fetchone()
    assert row is not None
    return int(row[0]), float(row[1]), int(row[2])


def test_cli_drain_is_timed_by_the_database(base: str) -> None:
    result = drain.measure(base, "boundq MAX_CONCURRENT_JOBS=50", "boundq", JOBS,
                           concurrency=50, workers=3)
    done, span, unfinished = _db_span(dbadmin.database_url(base, BENCH_DB))
    assert (done, unfinished) == (JOBS, 0)
    assert result["jobs"] == JOBS
    assert result["elapsed_s"] == pytest.approx(span, abs=1e-6)
    assert result["jobs_per_s"] == pytest.approx(JOBS / span)
    # measured outside the worker: its whole process (start-up, drain, shutdown)
    assert result["client_cpu_s"] > 0 and result["peak_rss_mb"] > 10
    assert result["worker_pid"] > 0 and result["peak_connections"] >= 1
    assert "server_cpu_s" in result  # the test cluster runs on this machine


def test_in_process_drain_is_timed_the_same_way(base: str) -> None:
    result = drain.measure(base, "in-process MAX_CONCURRENT_JOBS=50", "in-process", JOBS,
                           concurrency=50, workers=3)
    done, span, _ = _db_span(dbadmin.database_url(base, BENCH_DB))
    assert done == JOBS
    assert result["elapsed_s"] == pytest.approx(span, abs=1e-6)
    assert result["client_elapsed_s"] > 0  # the child's own clock, kept for the record


def test_cli_drain_of_the_first_jobs_of_a_larger_backlog_stops_there(base: str) -> None:
    url = prepare(base, "boundq", 20_000)
    result = drain_cli(url, {"MAX_CONCURRENT_JOBS": "5", "NUM_WORKERS": "1"}, first_n=300,
                       show_progress=False)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE id <= 300 AND status = 'success'"
                           ).fetchone()
    assert row == (300,)
    assert 300 <= result["finished"] < 20_000  # stopped with SIGTERM, not drained


def test_ratios_within_a_round() -> None:
    def r(label: str, mode: str, rate: float) -> dict[str, Any]:
        return {"label": label, "mode": mode, "jobs_per_s": rate, "jobs": 10, "backlog": 10}

    ratios = round_ratios([
        r("boundq MAX_CONCURRENT_JOBS=200", "boundq", 6000.0),
        r("in-process MAX_CONCURRENT_JOBS=200", "in-process", 8000.0),
        r("pgqueuer 5 consumers x batch 50", "pgqueuer", 3000.0),
        r("pgqueuer 2 consumers x batch 100", "pgqueuer", 4000.0),
    ])
    assert ratios == {"boundq MAX_CONCURRENT_JOBS=200 / PgQueuer best": 1.5,
                      "CLI / in-process MAX_CONCURRENT_JOBS=200": 0.75}


@pytest.mark.skipif(importlib.util.find_spec("pgqueuer") is None,
                    reason="the peers extra is not installed")
def test_pgqueuer_drain_is_timed_by_its_log(base: str) -> None:
    result = drain.measure(base, "pgqueuer 2 consumers x batch 100", "pgqueuer", 1000,
                           workers=2, batch=100)
    with psycopg.connect(dbadmin.database_url(base, BENCH_DB)) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM max(created) FILTER (WHERE status = 'successful') "
            "- min(created) FILTER (WHERE status = 'picked')) FROM pgqueuer_log").fetchone()
    assert row is not None
    assert result["jobs"] == 1000
    assert result["elapsed_s"] == pytest.approx(float(row[0]), abs=1e-6)
