"""Figures: each takes a DataFrame and returns a matplotlib Figure. No I/O here.

Built on `matplotlib.figure.Figure` (no pyplot, no global state, the Agg canvas when
saved), so they work the same in the report writer, in tests and in the notebook.
Column names are those of the run folders (see reports/writer.py and reports/sweep.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

COLORS = {"boundq": "#1f6feb", "pgqueuer": "#d29922", "procrastinate": "#8957e5",
          "2xx": "#2da44e", "429": "#d29922", "503": "#cf222e", "other": "#000000"}
PCT_STYLES = {"p50": "-", "p95": "--", "p99": ":"}


def _figure(cols: int = 1, width: float = 7.0, height: float = 4.0) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * cols if cols > 1 else width, height), layout="constrained")
    axes = [fig.add_subplot(1, cols, i + 1) for i in range(cols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def _log_y(ax: Axes) -> None:
    """A log axis with plain numbers (10, 20, 50), not powers of ten."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _systems(df: pd.DataFrame) -> list[str]:
    if "system" not in df:
        return ["boundq"]
    return list(dict.fromkeys(df["system"]))


def _by_system(df: pd.DataFrame, system: str) -> pd.DataFrame:
    return df if "system" not in df else df[df["system"] == system]


def _throughput(df: pd.DataFrame, x: str, xlabel: str, title: str, logx: bool) -> Figure:
    fig, (ax,) = _figure()
    for system in _systems(df):
        part = _by_system(df, system).sort_values(x)
        color = COLORS.get(system)
        if "jobs_per_s" in part and part["jobs_per_s"].notna().any():
            ax.plot(part[x], part["jobs_per_s"], "o-", color=color,
                    label=f"{system}: jobs/s processed")
        if "creates_per_s" in part and part["creates_per_s"].notna().any():
            ax.plot(part[x], part["creates_per_s"], "s--", color=color, alpha=0.7,
                    label=f"{system}: creates/s accepted (HTTP)")
    if logx:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def throughput_vs_concurrency(df: pd.DataFrame) -> Figure:
    """Columns: max_concurrent_jobs, jobs_per_s, [creates_per_s], [system]."""
    return _throughput(df, "max_concurrent_jobs", "MAX_CONCURRENT_JOBS (permits per process)",
                       "Throughput against concurrency", logx=True)


def throughput_vs_pool(df: pd.DataFrame) -> Figure:
    """Columns: pool_size, jobs_per_s, [creates_per_s], [system]."""
    return _throughput(df, "pool_size", "connections per process (MAX_DB_CONNECTIONS)",
                       "Throughput against pool size", logx=False)


def throughput_vs_workers(df: pd.DataFrame) -> Figure:
    """Columns: num_workers, worker_processes, jobs_per_s. One bar per combination."""
    fig, (ax,) = _figure()
    part = df.sort_values(["worker_processes", "num_workers"])
    labels = [f"{w} x {p}" for w, p in zip(part["num_workers"], part["worker_processes"],
                                           strict=True)]
    bars = ax.bar(labels, part["jobs_per_s"], color=COLORS["boundq"])
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.set_xlabel("NUM_WORKERS x WORKER_PROCESSES")
    ax.set_ylabel("jobs/s processed")
    ax.set_title("Throughput against acquirer loops and processes")
    return fig


def latency_vs_load(df: pd.DataFrame) -> Figure:
    """Columns: offered_per_s, start_p50/p95/p99, [finish_p50/p95/p99] (seconds), [system]."""
    fig, axes = _figure(cols=2, width=5.5)
    for ax, phase, title in ((axes[0], "start", "enqueue -> start"),
                             (axes[1], "finish", "enqueue -> finish")):
        for system in _systems(df):
            part = _by_system(df, system).sort_values("offered_per_s")
            for pct, style in PCT_STYLES.items():
                col = f"{phase}_{pct}"
                if col in part and part[col].notna().any():
                    ax.plot(part["offered_per_s"], part[col] * 1000, style, marker="o",
                            markersize=3, color=COLORS.get(system), label=f"{system} {pct}")
        _log_y(ax)
        ax.set_xlabel("offered load (jobs/s, open loop)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, handlelength=3.5)
    return fig


def resources(df: pd.DataFrame, x: str = "label") -> Figure:
    """Columns: <x>, peak_rss_mb, peak_connections, [connection_budget]."""
    fig, axes = _figure(cols=2, width=5.5)
    labels = df[x].astype(str)
    axes[0].bar(labels, df["peak_rss_mb"], color=COLORS["boundq"])
    axes[0].set_ylabel("peak RSS (MiB)")
    axes[0].set_title("Peak memory")
    axes[1].bar(labels, df["peak_connections"], color="#57606a", label="peak")
    if "connection_budget" in df:
        axes[1].plot(labels, df["connection_budget"], "r_", markersize=20, mew=2,
                     label="budget")
        axes[1].legend(fontsize=8)
    axes[1].set_ylabel("DB connections")
    axes[1].set_title("Peak connections")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return fig


def bloat_per_job(df: pd.DataFrame, x: str = "label") -> Figure:
    """Columns: <x>, dead_tuples_per_job, wal_bytes_per_job."""
    fig, axes = _figure(cols=2, width=5.5)
    labels = df[x].astype(str)
    colors = [COLORS.get(str(s), COLORS["boundq"]) for s in df.get("system", ["boundq"] * len(df))]
    for ax, col, title in ((axes[0], "dead_tuples_per_job", "Dead tuples per job"),
                           (axes[1], "wal_bytes_per_job", "WAL bytes per job")):
        bars = ax.bar(labels, df[col], color=colors)
        ax.bar_label(bars, fmt="{:,.1f}", fontsize=7)
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return fig


def peers(df: pd.DataFrame) -> Figure:
    """Columns: system, mode (drain | steady), jobs_per_s. Bars per mode, with the ratio of
    boundq to each peer written on the peer's bar."""
    modes = list(dict.fromkeys(df["mode"]))
    fig, axes = _figure(cols=len(modes), width=4.5)
    for ax, mode in zip(axes, modes, strict=True):
        part = df[df["mode"] == mode]
        best = part.groupby("system", sort=False)["jobs_per_s"].max()
        bars = ax.bar(best.index, best.values, color=[COLORS.get(s, "#888") for s in best.index])
        ours = best.get("boundq")
        labels = [f"{v:,.0f}" + (f"\nboundq {ours / v:.1f}x" if ours and s != "boundq" and v
                                 else "") for s, v in best.items()]
        ax.bar_label(bars, labels=labels, fontsize=8)
        ax.set_title("drain: jobs/s, best configuration" if mode == "drain" else
                     f"{mode}: highest arrival rate kept up with")
        ax.set_ylabel("jobs/s")
        ax.margins(y=0.2)
    return fig


# --- a flood's time series -----------------------------------------------------------
def flood_requests(df: pd.DataFrame) -> Figure:
    """Columns: t, status_2xx, status_429, status_503, status_other (cumulative), waiting,
    succeeded (cumulative): answers per second by status, and the queue."""
    fig, axes = _figure(cols=2, width=5.5)
    dt = df["t"].diff()
    for col, key in (("status_2xx", "2xx"), ("status_429", "429"), ("status_503", "503"),
                     ("status_other", "other")):
        rate = df[col].diff() / dt
        if rate.fillna(0).abs().sum() > 0 or key == "2xx":
            axes[0].plot(df["t"], rate, color=COLORS[key], label=key)
    axes[0].plot(df["t"], df["succeeded"].diff() / dt, color="#57606a", ls="--",
                 label="jobs processed")
    axes[0].set_title("Answers per second by status")
    axes[0].set_xlabel("seconds")
    axes[0].legend(fontsize=8)
    axes[1].plot(df["t"], df["waiting"], color=COLORS["boundq"], label="waiting")
    axes[1].plot(df["t"], df["processing"], color="#8957e5", label="processing")
    axes[1].set_title("Queue depth")
    axes[1].set_xlabel("seconds")
    axes[1].legend(fontsize=8)
    _shade_drain(df, axes)
    return fig


def flood_server(df: pd.DataFrame, budget: int | None = None) -> Figure:
    """Columns: t, rss_mb, connections, [phase]: the server's memory and connections."""
    fig, axes = _figure(cols=2, width=5.5)
    axes[0].plot(df["t"], df["rss_mb"], color=COLORS["boundq"])
    axes[0].set_ylim(bottom=0, top=df["rss_mb"].max() * 1.3 + 1)
    axes[0].set_title("Server RSS (MiB, process tree)")
    axes[1].step(df["t"], df["connections"], where="post", color="#57606a", label="open")
    if budget:
        axes[1].axhline(budget, color="#cf222e", ls="--", label=f"budget {budget}")
    axes[1].set_ylim(bottom=0, top=max(df["connections"].max(), budget or 0) * 1.25 + 1)
    axes[1].set_title("DB connections of the flood database")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("seconds")
    _shade_drain(df, axes)
    return fig


def flood_latency(df: pd.DataFrame) -> Figure:
    """Locust's history (Aggregated rows): t, users, p50, p95, p99 (ms), requests_per_s."""
    fig, axes = _figure(cols=2, width=5.5)
    for pct, style in PCT_STYLES.items():
        axes[0].plot(df["t"], df[pct], style, color=COLORS["boundq"], label=pct)
    _log_y(axes[0])
    axes[0].set_ylabel("response time (ms)")
    axes[0].set_title("Response time percentiles (all requests)")
    axes[0].legend(fontsize=8)
    axes[1].plot(df["t"], df["requests_per_s"], color=COLORS["2xx"], label="requests/s")
    axes[1].plot(df["t"], df["failures_per_s"], color=COLORS["503"], label="non-2xx/s")
    twin = axes[1].twinx()
    twin.plot(df["t"], df["users"], color="#57606a", ls=":", label="users")
    twin.set_ylabel("users")
    axes[1].set_title("Locust: requests per second")
    axes[1].legend(fontsize=8, loc="upper left")
    for ax in axes:
        ax.set_xlabel("seconds")
    return fig


def _shade_drain(df: pd.DataFrame, axes: Sequence[Axes]) -> None:
    if "phase" not in df or not (df["phase"] == "drain").any():
        return
    start = df.loc[df["phase"] == "drain", "t"].min()
    for ax in axes:
        ax.axvspan(start, df["t"].max(), color="#d0d7de", alpha=0.4, lw=0)
        ax.text(start, ax.get_ylim()[1], " drain", va="top", fontsize=7, color="#57606a")


def runs_comparison(df: pd.DataFrame) -> Figure:
    """One row per flood run (reports.writer.floods_table): jobs/s offered, accepted and
    processed, and the server's peak RSS, side by side across runs."""
    fig, axes = _figure(cols=2, width=5.5)
    runs = df["run"].astype(str)
    width = 0.27
    xs = range(len(runs))
    for i, (col, color) in enumerate((("jobs_offered_per_s", "#57606a"),
                                      ("jobs_accepted_per_s", COLORS["2xx"]),
                                      ("jobs_processed_per_s", COLORS["boundq"]))):
        axes[0].bar([x + (i - 1) * width for x in xs], df[col], width, color=color,
                    label=col.removeprefix("jobs_").removesuffix("_per_s"))
    axes[0].set_title("Jobs per second by flood run")
    axes[0].legend(fontsize=8)
    axes[1].bar(runs, df["peak_rss_mb"], color=COLORS["boundq"])
    axes[1].set_title("Server peak RSS (MiB) by flood run")
    for ax in axes:
        ax.set_xticks(list(xs), list(runs))
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    return fig
