"""The flood runner end to end on a tiny run: server + Locust + drain + verification.

Locust runs as its own process (the runner starts `python -m locust`); nothing here
imports it.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import pytest

# find_spec, never import: importing locust would monkey-patch this process with gevent.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[load]')", allow_module_level=True)
pytest.importorskip("matplotlib")

from boundq.core.pgembed import EmbeddedPostgres
from boundq.loadtests.flood import FloodOptions, arrival_rate, run_flood
from boundq.loadtests.verify import unexpected_statuses
from boundq.reports.flood_report import write_flood_report

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario, rate", [("mixed", ""), ("arrival", "300")])
def test_tiny_flood_loses_nothing(pg_cluster: EmbeddedPostgres, tmp_path: Path, scenario: str,
                                  rate: str) -> None:
    out = io.StringIO()
    options = FloodOptions(scenario=scenario, users=4, spawn_rate=4, duration_s=4, rate=rate,
                           job_ms=0, bulk_size=20, drain_timeout_s=60, out_root=tmp_path,
                           database_url=pg_cluster.url("postgres"))
    result = run_flood(options, stream=out)
    printed = out.getvalue()
    assert result.passed, printed
    assert "PASSED: lost = 0" in printed
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["kind"] == "flood"
    assert run["verdict"]["lost"] == 0
    assert run["verdict"]["acknowledged"] > 0
    assert run["verdict"]["acknowledged"] == run["verdict"]["succeeded"]
    assert set(run["postgres"]) >= {"fsync", "synchronous_commit", "server_version"}
    assert run["machine"]["cores"] and run["versions"]["locust"]
    assert run["settings"]["database_url"] == "(flood database)"
    for name in ("locust_stats.csv", "locust_stats_history.csv", "server_samples.csv",
                 "server_metrics.prom", "server.log", "locust.log"):
        assert (result.run_dir / name).is_file(), name
    assert not list(result.run_dir.glob("acked-*.txt")), "ids are dropped after a pass"
    summary = write_flood_report(result.run_dir).read_text()
    assert "lost = 0" in summary
    for png in ("flood-requests.png", "flood-server.png", "flood-latency.png"):
        assert (result.run_dir / png).stat().st_size > 1000
        assert f"]({png})" in summary


def test_rate_multiple_of_capacity() -> None:
    assert arrival_rate("3x", 500.0) == 1500.0
    assert arrival_rate("250", None) == 250.0
    with pytest.raises(RuntimeError, match="capacity"):
        arrival_rate("3x", None)


def test_only_2xx_429_503_are_expected() -> None:
    assert unexpected_statuses({"200": 5, "201": 3, "429": 9, "503": 1, "dropped": 4}) == {}
    assert unexpected_statuses({"201": 3, "500": 1, "error": 2}) == {"500": 1, "error": 2}
