"""Every figure function takes a small DataFrame and returns a Figure (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from boundq.reports import figures  # noqa: E402
from boundq.reports.report_writer import peers_frame  # noqa: E402

SWEEP = pd.DataFrame({
    "system": ["boundq"] * 3, "label": ["c=1", "c=5", "c=50"],
    "max_concurrent_jobs": [1, 5, 50], "pool_size": [4, 8, 15],
    "num_workers": [1, 3, 3], "worker_processes": [1, 1, 2],
    "jobs_per_s": [400.0, 1500.0, 4000.0], "creates_per_s": [900.0, 950.0, float("nan")],
    "peak_rss_mb": [40.0, 41.0, 60.0], "peak_connections": [4, 6, 12],
    "connection_budget": [9, 13, 28], "dead_tuples_per_job": [3.0, 3.0, 3.0],
    "wal_bytes_per_job": [900.0, 950.0, 990.0],
})
STEADY = pd.DataFrame({
    "system": ["boundq", "boundq", "pgqueuer", "pgqueuer"],
    "offered_per_s": [250, 1000, 250, 1000], "processed_per_s": [250, 990, 249, 700],
    "start_p50": [0.004, 0.003, 0.03, 0.02], "start_p95": [0.01, 0.008, 0.5, 0.1],
    "start_p99": [0.02, 0.01, 0.6, 0.2], "finish_p50": [0.01, 0.008, None, None],
    "finish_p95": [0.02, 0.02, None, None], "finish_p99": [0.03, 0.03, None, None],
})
SAMPLES = pd.DataFrame({
    "t": [0.0, 1.0, 2.0, 3.0], "phase": ["load", "load", "drain", "drain"],
    "rss_mb": [45.0, 48.0, 48.5, 48.5], "connections": [7, 11, 11, 11],
    "waiting": [0, 1500, 700, 0], "processing": [0, 5, 5, 0],
    "status_2xx": [0, 500, 520, 520], "status_429": [0, 200, 250, 250],
    "status_503": [0, 0, 0, 0], "status_other": [0, 0, 0, 0],
    "succeeded": [0, 300, 900, 1500],
})
HISTORY = pd.DataFrame({"t": [0, 1, 2], "users": [5, 10, 10], "requests_per_s": [0, 300, 500],
                        "failures_per_s": [0, 10, 100], "p50": [None, 10, 12],
                        "p95": [None, 30, 40], "p99": [None, 60, 90]})


@pytest.mark.parametrize("make", [
    lambda: figures.throughput_vs_concurrency(SWEEP),
    lambda: figures.throughput_vs_pool(SWEEP),
    lambda: figures.throughput_vs_workers(SWEEP),
    lambda: figures.latency_vs_load(STEADY),
    lambda: figures.resources(SWEEP),
    lambda: figures.bloat_per_job(SWEEP),
    lambda: figures.peers(pd.DataFrame({"system": ["boundq", "pgqueuer", "boundq"],
                                        "mode": ["drain", "drain", "steady"],
                                        "jobs_per_s": [4000.0, 2000.0, 1000.0]})),
    lambda: figures.flood_requests(SAMPLES),
    lambda: figures.flood_server(SAMPLES, 15),
    lambda: figures.flood_latency(HISTORY),
], ids=["concurrency", "pool", "workers", "latency", "resources", "bloat", "peers",
        "flood-requests", "flood-server", "flood-latency"])
def test_figure_functions_return_figures(make) -> None:
    fig = make()
    assert isinstance(fig, Figure)
    assert fig.axes, "a figure with something on it"
    assert all(ax.get_title() for ax in fig.axes if ax.get_ylabel() != "users")


def test_figures_render_to_png(tmp_path: Path) -> None:
    path = tmp_path / "f.png"
    figures.throughput_vs_concurrency(SWEEP).savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_peers_frame_ratios_from_points(tmp_path: Path) -> None:
    SWEEP.to_csv(tmp_path / "points-concurrency.csv", index=False)
    pd.DataFrame({"system": ["pgqueuer"], "jobs_per_s": [2000.0]}).to_csv(
        tmp_path / "points-peers.csv", index=False)
    STEADY.to_csv(tmp_path / "points-steady.csv", index=False)
    frame = peers_frame(tmp_path)
    drain = frame[frame["mode"] == "drain"].set_index("system")["jobs_per_s"]
    assert drain["boundq"] == 4000.0 and drain["pgqueuer"] == 2000.0
    steady = frame[frame["mode"] == "steady"].set_index("system")["jobs_per_s"]
    # pgqueuer processed 700 of 1000 offered: it kept up only with 250/s
    assert steady["boundq"] == 1000 and steady["pgqueuer"] == 250
