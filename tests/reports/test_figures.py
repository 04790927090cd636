"""Every figure function takes a small DataFrame and returns a Figure (no I/O); the
defects a reader saw are checked on the drawn figure itself."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from boundq.reports import figures, flood_figures  # noqa: E402
from boundq.reports.report_writer import peers_frame  # noqa: E402

SWEEP = pd.DataFrame({
    "system": ["boundq"] * 3,
    "label": ["MAX_CONCURRENT_JOBS=1", "MAX_CONCURRENT_JOBS=5", "MAX_CONCURRENT_JOBS=50"],
    "max_concurrent_jobs": [1, 5, 50], "pool_size": [4, 8, 15],
    "num_workers": [1, 3, 3], "worker_processes": [1, 1, 2],
    "jobs_per_s": [400.0, 1500.0, 4000.0], "creates_per_s": [900.0, 950.0, float("nan")],
    "peak_rss_mb": [40.0, 41.0, 60.0], "peak_connections": [4, 6, 12],
    "connection_budget": [9, 13, 28], "dead_tuples_per_job": [3.0, 3.0, 3.0],
    "wal_bytes_per_job": [900.0, 950.0, 990.0],
})
PEERS = pd.DataFrame({
    "system": ["pgqueuer", "pgqueuer", "procrastinate"],
    "label": ["pgqueuer 5 consumers x batch 50", "pgqueuer 2 consumers x batch 100",
              "procrastinate concurrency 10"],
    "mode": ["drain"] * 3, "consumers": [5, 2, 10], "batch": [50, 100, 0],
    "jobs_per_s": [3000.0, 3500.0, 130.0], "peak_rss_mb": [58.0, 57.0, 70.0],
    "peak_connections": [6, 3, 5], "dead_tuples_per_job": [2.0, 2.0, 6.0],
    "wal_bytes_per_job": [1200.0, 1100.0, 3000.0],
})
STEADY = pd.DataFrame({
    "system": ["boundq", "boundq", "pgqueuer", "pgqueuer"],
    "offered_per_s": [250, 1000, 250, 1000], "processed_per_s": [250, 990, 249, 700],
    "start_p50": [0.004, 0.003, 0.03, 0.02], "start_p95": [0.01, 0.008, 0.5, 0.1],
    "start_p99": [0.02, 0.01, 0.6, 0.2], "finish_p50": [0.01, 0.008, None, None],
    "finish_p95": [0.02, 0.02, None, None], "finish_p99": [0.03, 0.03, None, None],
})
PREDICT = pd.DataFrame({
    "system": ["boundq"] * 3 + ["pgqueuer"] * 3, "load_x": [0.5, 2.0, 10.0] * 2,
    "offered_per_s": [250.0, 1000.0, 5000.0] * 2, "sent_per_s": [249.0, 995.0, 4950.0] * 2,
    "goodput_per_s": [249.0, 480.0, 470.0, 248.0, 300.0, 120.0],
    "pickup_p50_ms": [3.0, 900.0, 1500.0, 20.0, 1200.0, 1700.0],
    "pickup_p99_ms": [9.5, 2100.0, 2900.0, 60.0, 2500.0, 3100.0],
    "arrived": [600, 2400, 12000] * 2, "unstarted": [0, 0, 9000, 0, 800, 11000],
    "capacity_per_s": [500.0] * 6, "job_ms": [10] * 6, "concurrency": [5] * 6,
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
    lambda: figures.throughput_vs_concurrency(SWEEP, PEERS),
    lambda: figures.throughput_vs_pool(SWEEP, PEERS),
    lambda: figures.throughput_vs_workers(SWEEP),
    lambda: figures.latency_vs_load(STEADY),
    lambda: figures.resources(SWEEP),
    lambda: figures.bloat_per_job(SWEEP),
    lambda: figures.peers(pd.DataFrame({"system": ["boundq", "pgqueuer", "boundq"],
                                        "mode": ["drain", "drain", "steady"],
                                        "jobs_per_s": [4000.0, 2000.0, 1000.0]})),
    lambda: figures.predictability(PREDICT),
    lambda: flood_figures.flood_requests(SAMPLES),
    lambda: flood_figures.flood_server(SAMPLES, 15),
    lambda: flood_figures.flood_latency(HISTORY),
], ids=["concurrency", "pool", "workers", "latency", "resources", "bloat", "peers",
        "predictability", "flood-requests", "flood-server", "flood-latency"])
def test_figure_functions_return_figures(make) -> None:
    fig = make()
    assert isinstance(fig, Figure)
    assert fig.axes, "a figure with something on it"
    assert all(ax.get_title() for ax in fig.axes if ax.get_ylabel() != "users")


def test_figures_render_to_png(tmp_path: Path) -> None:
    path = tmp_path / "f.png"
    figures.throughput_vs_concurrency(SWEEP).savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig).draw()  # as when saved: label extents are real pixels
    return fig


def _label_ends_under_its_bar(ax: Axes) -> None:
    """Each category label's end (where a slanted label meets the axis) lies within its
    own bar's horizontal extent, not the next one's."""
    canvas = ax.figure.canvas
    assert isinstance(canvas, FigureCanvasAgg)
    renderer = canvas.get_renderer()
    bars = sorted(ax.patches, key=lambda p: p.get_x())
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert len(labels) == len(bars)
    for bar, label in zip(bars, labels, strict=True):
        box = bar.get_window_extent(renderer)
        end = label.get_window_extent(renderer).x1
        assert box.x0 <= end <= box.x1 + 2, (label.get_text(), end, box.x0, box.x1)


@pytest.mark.parametrize("make", [lambda: figures.resources(pd.concat([SWEEP, PEERS])),
                                  lambda: figures.bloat_per_job(pd.concat([SWEEP, PEERS]))],
                         ids=["resources", "bloat"])
def test_bar_labels_sit_under_their_bars(make) -> None:
    fig = _drawn(make())
    for ax in fig.axes:
        _label_ends_under_its_bar(ax)


def test_bloat_has_a_legend_of_its_systems() -> None:
    fig = figures.bloat_per_job(pd.concat([SWEEP, PEERS]))
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == ["boundq", "PgQueuer", "procrastinate"]


@pytest.mark.parametrize("history", [
    HISTORY,  # 10..90 ms: inside one decade
    HISTORY.assign(p50=[None, 12, 13], p95=[None, 20, 25], p99=[None, 30, 38]),
    HISTORY.assign(p50=[None, 1.0, 2.0], p95=[None, 50, 90], p99=[None, 400, 2500]),
], ids=["one-decade", "narrow", "three-decades"])
def test_flood_latency_log_axis_has_several_readable_ticks(history: pd.DataFrame) -> None:
    ax = _drawn(flood_figures.flood_latency(history)).axes[0]
    low, high = ax.get_ylim()
    shown = [t.get_text() for t in ax.get_yticklabels()
             if t.get_text() and low <= t.get_position()[1] <= high]
    assert len(shown) >= 3, shown
    assert all("10^" not in t and "$" not in t for t in shown), shown


def _labels(fig: Figure) -> list[str]:
    return [line.get_label() for ax in fig.axes for line in ax.get_lines()]


def test_peers_drawn_on_concurrency_and_pool_figures() -> None:
    conc = figures.throughput_vs_concurrency(SWEEP, PEERS)
    assert any(label.startswith("PgQueuer drain") for label in _labels(conc))
    assert any(label.startswith("procrastinate drain") for label in _labels(conc))
    pool = figures.throughput_vs_pool(SWEEP, PEERS)
    assert any(label.startswith("PgQueuer drain") for label in _labels(pool))
    assert "no pool-size setting" in pool.get_supxlabel()


def test_pool_figure_says_why_peers_are_missing_without_connection_counts() -> None:
    pool = figures.throughput_vs_pool(SWEEP, PEERS.drop(columns=["peak_connections"]))
    assert not any("PgQueuer" in label for label in _labels(pool))
    assert "not drawn" in pool.get_supxlabel()


def test_predictability_figure_draws_the_bound_and_each_system() -> None:
    fig = figures.predictability(PREDICT)
    goodput, pickup = fig.axes
    assert goodput.get_xscale() == "log" and pickup.get_yscale() == "log"
    labels = _labels(fig)
    assert "boundq" in labels and "PgQueuer" in labels
    bound = [line for line in goodput.get_lines() if line.get_label().startswith("capacity")]
    assert bound and set(bound[0].get_ydata()) == {500.0}


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
