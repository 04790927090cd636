"""The flood runner end to end on a tiny run: server + Locust + drain + verification.

Locust runs as its own process (the runner starts `python -m locust`); nothing here
imports it.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

# find_spec, never import: importing locust would monkey-patch this process with gevent.
if importlib.util.find_spec("locust") is None:
    pytest.skip("locust is not installed (pip install -e '.[load]')", allow_module_level=True)
pytest.importorskip("matplotlib")

from boundq.cli import main
from boundq.core import dbadmin
from boundq.core.pgembed import EmbeddedPostgres
from boundq.loadtests import processes as procs
from boundq.loadtests.flood import FLOOD_DB, FloodOptions, arrival_rate, run_flood
from boundq.loadtests.pace import CALIBRATION_NAME
from boundq.loadtests.probe import ProbeResult
from boundq.loadtests.probe import percentile as probe_percentile
from boundq.loadtests.tally import NOT_SENT, Tally, percentile
from boundq.loadtests.verify import unexpected_statuses
from boundq.reports.flood_report import write_flood_report

pytestmark = pytest.mark.slow


def _check_totals(printed: str, result: dict[str, Any]) -> None:
    """The request total equals the sum of the answers by status, printed and stored,
    and the sum over the endpoints."""
    line = re.search(r"^requests: ([\d,]+) in .*answers by status: (.*)$", printed, re.M)
    assert line, printed
    total = int(line.group(1).replace(",", ""))
    by_status = {code: int(n.replace(",", ""))
                 for code, n in re.findall(r"(\w+) ([\d,]+)", line.group(2))}
    assert total > 0 and total == sum(by_status.values()), line.group(0)
    stored = {k: v for k, v in result["statuses"].items() if k not in NOT_SENT}
    assert stored == by_status
    assert result["requests"] == total == sum(e["requests"] for e in result["endpoints"].values())
    for e in result["endpoints"].values():
        assert e["requests"] == sum(sub["requests"] for sub in e["by_status"].values())


@pytest.mark.parametrize("scenario, rate", [("mixed", ""), ("arrival", "300")])
def test_tiny_flood_loses_nothing(pg_cluster: EmbeddedPostgres, tmp_path: Path, scenario: str,
                                  rate: str) -> None:
    out = io.StringIO()
    # the arrival run (300 noop jobs/s) never saturates the workers: an impossible pace
    # threshold must then not fail it ("not saturated", pace not judged)
    options = FloodOptions(scenario=scenario, users=4, spawn_rate=4, duration_s=4, rate=rate,
                           job_ms=0, bulk_size=20, drain_timeout_s=60, out_root=tmp_path,
                           database_url=pg_cluster.url("postgres"), calibration_s=1,
                           pace_threshold=100 if scenario == "arrival" else 0.9)
    result = run_flood(options, stream=out)
    printed = out.getvalue()
    assert "PASSED: lost = 0" in printed, printed
    run = json.loads((result.run_dir / "run.json").read_text())
    _check_totals(printed, run["result"])
    if scenario == "arrival":
        assert run["result"]["pace"]["saturated"] is False, run["result"]["pace"]
        assert "not saturated" in printed and "pace not judged" in printed
    assert result.passed, printed
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
    probed = run["result"]["door_probe"]["by_status"]  # the probe ran beside the load
    assert probed and sum(s["n"] for s in probed.values()) > 0, probed
    assert "door probe (one client, 20 creates/s" in printed
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


def test_the_load_generator_runs_at_the_niceness_asked(tmp_path: Path) -> None:
    """--locust-nice lowers the load generator's CPU priority, and only its own."""
    ours = os.nice(0)
    log = tmp_path / "locust.log"
    argv = [sys.executable, "-c", "import os; print(os.nice(0))"]
    proc = procs.start_locust(argv, procs.child_env({}), log, nice=7)
    assert proc.wait(60) == 0
    assert int(log.read_text().split()[-1]) == min(ours + 7, 19)
    assert os.nice(0) == ours


def test_the_load_generator_runs_on_the_apis_cpus(tmp_path: Path) -> None:
    """Locust stands in for clients elsewhere: it shares the API's CPUs (API_CPUS), never
    the one left to the workers."""
    ours = frozenset(os.sched_getaffinity(0))
    cpus = frozenset({max(ours)})
    log = tmp_path / "locust.log"
    argv = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    proc = procs.start_locust(argv, procs.child_env({}), log, cpus=cpus)
    assert proc.wait(60) == 0
    assert log.read_text().strip().splitlines()[-1] == str(sorted(cpus))
    assert frozenset(os.sched_getaffinity(0)) == ours


@pytest.mark.parametrize("nice", ["-1", "20"])
def test_a_locust_niceness_out_of_range_is_refused_before_anything_starts(
        nice: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["flood", "--locust-nice", nice]) == 2
    assert "--locust-nice (FLOOD_LOCUST_NICE) must be 0-19" in capsys.readouterr().err


def test_only_2xx_429_503_are_expected() -> None:
    assert unexpected_statuses({"200": 5, "201": 3, "429": 9, "503": 1, "dropped": 4}) == {}
    assert unexpected_statuses({"201": 3, "500": 1, "error": 2}) == {"500": 1, "error": 2}


def _recount(db_url: str, start: str, end: str, name: str | None) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM jobs WHERE finished_at > %s AND finished_at <= %s "
            "AND (%s::text IS NULL OR name = %s)",
            (datetime.fromisoformat(start), datetime.fromisoformat(end), name, name)).fetchone()
    assert row is not None
    return int(row[0])


# For a test whose point is not the door: creates are refused only at MAX_QUEUE_DEPTH, never
# because the API's event loop runs late, and the API has the workers' CPU priority. On a
# busy machine (CI's 2 cores, or `make test-busy`) the door shed most creates otherwise.
NO_SHEDDING = {"API_SHED_LAG_SECONDS": "3600", "API_NICE": "0"}


def test_pace_is_measured_from_the_database_and_judged(pg_cluster: EmbeddedPostgres,
                                                       tmp_path: Path) -> None:
    """Closed-loop creates far above the capacity bound (5 permits x 1000 / 100 ms = 50
    jobs/s) keep the queue at MAX_QUEUE_DEPTH: the workers are saturated, the pace is
    judged, and no real run reaches 100 x its idle pace, so the verdict must fail on it
    (and on nothing else). Both rates are recounted from the jobs table. The door refuses
    creates at the queue's depth only (NO_SHEDDING): the 429s that keep the queue full."""
    out = io.StringIO()
    options = FloodOptions(scenario="create", users=6, spawn_rate=6, duration_s=6, job_ms=100,
                           max_queue_depth=300, drain_timeout_s=120, out_root=tmp_path,
                           database_url=pg_cluster.url("postgres"), calibration_s=2,
                           pace_threshold=100, server_env=NO_SHEDDING)
    result = run_flood(options, stream=out)
    printed = out.getvalue()
    run = json.loads((result.run_dir / "run.json").read_text())
    pace = run["result"]["pace"]
    assert pace["saturated"] is True and pace["judged"] is True, (pace, printed)
    idle, flood = pace["idle"], pace["flood"]
    assert idle["jobs"] > 0 and flood["jobs"] > 0
    db_url = dbadmin.database_url(pg_cluster.url("postgres"), FLOOD_DB)
    assert _recount(db_url, idle["start"], idle["end"], CALIBRATION_NAME) == idle["jobs"]
    assert _recount(db_url, flood["start"], flood["end"], None) == flood["jobs"]
    assert idle["jobs_per_s"] == pytest.approx(idle["jobs"] / idle["window_s"], rel=0.01)
    assert pace["ratio"] == pytest.approx(flood["jobs_per_s"] / idle["jobs_per_s"], rel=0.01)
    assert run["result"]["pace_under_flood_vs_idle"] == pace["ratio"]
    assert run["result"]["jobs_processed_per_s_idle"] == idle["jobs_per_s"]
    assert pace["idle_vs_capacity"] == pytest.approx(idle["jobs_per_s"] / 50, rel=0.01)
    assert re.search(rf"processing under flood = {pace['ratio']:.2f} x idle \(idle "
                     rf"[\d,]+ jobs/s, under flood [\d,]+ jobs/s; capacity bound 50 jobs/s\)",
                     printed), printed
    assert re.search(r"idle pace = \d+% of the capacity bound", printed), printed
    assert not result.passed
    assert run["result"]["failures"] == [
        f"processing under flood = {pace['ratio']:.2f} x idle, under the threshold 100.00 "
        "(--pace-threshold)"], printed
    assert run["verdict"]["lost"] == 0
    metrics = (result.run_dir / "server_metrics.prom").read_text().splitlines()
    assert "boundq_api_shed_total 0.0" in metrics  # NO_SHEDDING reached the server
    _check_totals(printed, run["result"])


def test_distributed_load_and_extra_workers_lose_nothing(pg_cluster: EmbeddedPostgres,
                                                         tmp_path: Path) -> None:
    """Two Locust worker processes, and two extra `boundq worker`s beside the server, one
    of them through the fault proxy (in a network namespace where allowed) and cut off
    for two seconds: every tally is collected (each job in the database was acknowledged
    to some load generator, each 201 names one acknowledged id), nothing is lost, and
    every extra worker did work under its own owner id."""
    out = io.StringIO()
    options = FloodOptions(scenario="create", users=4, spawn_rate=4, duration_s=6, job_ms=0,
                           drain_timeout_s=120, out_root=tmp_path,
                           database_url=pg_cluster.url("postgres"), calibration_s=1,
                           locust_processes=2, extra_workers=2, proxied_worker=True,
                           partition_s=2)
    result = run_flood(options, stream=out)
    printed = out.getvalue()
    assert result.passed, printed
    run = json.loads((result.run_dir / "run.json").read_text())
    verdict, summary = run["verdict"], run["result"]
    assert verdict["lost"] == 0 and verdict["unacknowledged"] == 0, verdict
    assert verdict["duplicates"] == 0
    tallies = list(result.run_dir.glob("tally-*.json"))
    assert len(tallies) == 2, tallies  # one per Locust worker process, none from the master
    probed = (summary["door_probe"]["by_status"].get("201") or {}).get("n", 0)
    assert summary["endpoints"]["POST /jobs"]["by_status"]["201"]["requests"] + probed == \
        verdict["acknowledged"]  # the door probe's 201s are acknowledged jobs too
    hosts = summary["hosts"]
    assert hosts["network_namespace"] == procs.can_unshare_net()
    assert [w["exit_code"] for w in hosts["extra_workers"]] == [0, 0]
    assert hosts["proxy"]["accepted"] > 0
    by_process = hosts["attempts_by_process"]
    assert set(by_process) == {"serve", "worker-1", "worker-2"}, by_process
    assert all(v["attempts"] > 0 for v in by_process.values()), by_process
    assert "partition healed" in printed


def test_percentiles_of_the_tally() -> None:
    tally = Tally()
    for ms in range(1, 101):
        tally.record("POST /jobs", "201" if ms <= 90 else "429", float(ms), float(ms))
    assert tally.requests() == 100 and tally.statuses() == {"201": 90, "429": 10}
    assert percentile(tally.histogram("POST /jobs"), 0.5) == 50
    assert percentile(tally.histogram("POST /jobs"), 0.99) == 99
    assert percentile(tally.histogram("POST /jobs", "429"), 0.5) == 95
    assert tally.seconds == 99
    merged = Tally()
    merged.merge(json.loads(tally.to_json()))
    merged.merge(json.loads(tally.to_json()))
    assert merged.requests() == 200 and merged.processes == 2


def test_door_probe_percentiles_and_judgement() -> None:
    assert probe_percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert probe_percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert probe_percentile([7.0], 0.99) == 7.0
    result = ProbeResult(20.0, {"429": [1.0] * 99 + [9.0], "201": [10.0, 60.0]})
    assert result.stats("429") == {"n": 100, "p50_ms": 1.0, "p99_ms": 1.0, "max_ms": 9.0}
    assert result.failures(5, 50) == [
        "the door probe's accepted creates (201) took p99 60.0 ms, over 50 ms"]
    assert result.failures(0, 0) == []  # 0: not judged
    slow = ProbeResult(20.0, {"429": [1.0] * 98 + [9.0, 9.0]})
    assert slow.failures(5, 50) == ["the door probe's refusals (429) took p99 9.0 ms, over 5 ms"]
    assert "201: none" in slow.line(5, 50) and "(target 5 ms)" in slow.line(5, 50)
