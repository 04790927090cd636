"""The drain benchmark's `--kinds noop,wasm`: a backlog of `wasm` jobs (add(2, 3) of a
module stored as PUT /modules stores it) drained through `boundq worker` like the noop
one, and the wasm / noop ratios taken within a round."""

from __future__ import annotations

import psycopg
import pytest

from boundq.core import dbadmin
from boundq.core.pgembed import EmbeddedPostgres
from boundq.reports import drain
from boundq.reports.drain_kinds import MODULE_NAME, kind_ratios
from boundq.reports.drain_run import BENCH_DB

pytestmark = pytest.mark.slow

JOBS = 1000


def test_wasm_backlog_drains_through_the_worker(pg_cluster: EmbeddedPostgres) -> None:
    base = pg_cluster.url("postgres")
    result = drain.measure(base, "boundq MAX_CONCURRENT_JOBS=50 kind=wasm", "boundq", JOBS,
                           concurrency=50, workers=3, kind="wasm")
    with psycopg.connect(dbadmin.database_url(base, BENCH_DB)) as conn:
        rows = conn.execute("SELECT kind, status, attempts, count(*) FROM jobs "
                            "GROUP BY 1, 2, 3").fetchall()
        module = conn.execute("SELECT name, exports FROM job_modules").fetchall()
        span = conn.execute("SELECT extract(epoch FROM max(finished_at) - min(started_at)) "
                            "FROM jobs").fetchone()
    assert rows == [("wasm", "success", 1, JOBS)]  # every one ran the module, first time
    assert [m[0] for m in module] == [MODULE_NAME]
    assert "add" in str(module[0][1])
    assert result["kind"] == "wasm" and result["jobs"] == JOBS
    assert span is not None and result["elapsed_s"] == pytest.approx(float(span[0]), abs=1e-6)


def test_kind_ratios_pair_each_kind_with_noop_of_its_level() -> None:
    def r(kind: str, level: int, rate: float, client_s: float, server_s: float) -> dict[
            str, object]:
        return {"mode": "boundq", "kind": kind, "concurrency": level, "jobs": 1000,
                "jobs_per_s": rate, "client_cpu_s": client_s, "server_cpu_s": server_s,
                "flow": "none", "delayed": 0}
    results = [r("noop", 50, 2000.0, 1.0, 1.0), r("wasm", 50, 1000.0, 3.0, 1.0),
               r("noop", 200, 4000.0, 1.0, 0.5), r("wasm", 200, 3000.0, 1.5, 0.5)]
    ratios = kind_ratios(results)
    assert ratios == {"wasm / noop MAX_CONCURRENT_JOBS=50": (0.5, 2.0),
                      "wasm / noop MAX_CONCURRENT_JOBS=200": (0.75, pytest.approx(4 / 3))}
    assert kind_ratios(results[1:2]) == {}  # no noop drain of that level: no ratio
