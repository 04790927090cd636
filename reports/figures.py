"""Figures of a `boundq report` run: each takes DataFrames and returns a matplotlib
Figure; no I/O here. Column names are those of the run folders (reports/writer.py,
reports/sweep.py). The flood's figures are in reports/flood_figures.py.
"""

from __future__ import annotations

import textwrap

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from boundq.reports.figstyle import (
    COLORS,
    NAMES,
    NEUTRAL,
    PCT_STYLES,
    log_axis,
    new_figure,
    plain_number,
    rows_of,
    slant_labels,
    system_colors,
    systems_legend,
    systems_of,
)

LOWER_BOUND_SHARE = 0.01  # a pickup p99 is a lower bound when more jobs than this wait
PEER_KNOBS = {"pgqueuer": "x = consumers x batch", "procrastinate": "x = worker concurrency"}


def _boundq_lines(ax: Axes, df: pd.DataFrame, x: str) -> None:
    for system in systems_of(df):
        part = rows_of(df, system).sort_values(x)
        color = COLORS.get(system)
        if "jobs_per_s" in part and part["jobs_per_s"].notna().any():
            ax.plot(part[x], part["jobs_per_s"], "o-", color=color,
                    label=f"{NAMES.get(system, system)}: jobs/s processed")
        if "creates_per_s" in part and part["creates_per_s"].notna().any():
            ax.plot(part[x], part["creates_per_s"], "s--", color=color,
                    alpha=0.7, label=f"{NAMES.get(system, system)}: creates/s accepted (HTTP)")


def peer_concurrency(peers: pd.DataFrame) -> pd.Series:
    """Where a peer's drain sits on the concurrency axis: PgQueuer's consumers x batch
    (jobs it claims per round of its consumers), procrastinate's worker concurrency."""
    batch = peers["batch"].fillna(0).clip(lower=1) if "batch" in peers else 1
    knob = peers["consumers"] * batch
    return knob.where(peers["system"] == "pgqueuer", peers["consumers"])


def throughput_vs_concurrency(df: pd.DataFrame, peers: pd.DataFrame | None = None) -> Figure:
    """df: max_concurrent_jobs, jobs_per_s, [creates_per_s], [system]. peers (points-
    peers.csv): system, consumers, batch, jobs_per_s, drawn at their own knob."""
    fig, (ax,) = new_figure()
    _boundq_lines(ax, df, "max_concurrent_jobs")
    if peers is not None and not peers.empty:
        at = peer_concurrency(peers)
        for system in systems_of(peers):
            mask = peers["system"] == system
            ax.plot(at[mask], peers.loc[mask, "jobs_per_s"], "D", color=COLORS.get(system),
                    markersize=7, label=f"{NAMES.get(system, system)} drain "
                    f"({PEER_KNOBS.get(system, 'its setting')})")
    log_axis(ax, "x")
    ax.set_xlabel("MAX_CONCURRENT_JOBS (permits per process); peers: see legend")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against concurrency")
    ax.legend(fontsize=8)
    return fig


def throughput_vs_pool(df: pd.DataFrame, peers: pd.DataFrame | None = None) -> Figure:
    """df: pool_size, jobs_per_s, [creates_per_s], [system]. Peers have no pool-size
    setting in the setups measured; with their peak_connections they are drawn at the
    connections they held."""
    fig, (ax,) = new_figure()
    _boundq_lines(ax, df, "pool_size")
    note = ("PgQueuer and procrastinate have no pool-size setting in the setups measured "
            "(PgQueuer: one connection per consumer; procrastinate: its connector's "
            "default pool)")
    if peers is not None and "peak_connections" in peers and peers["peak_connections"].notna().any():
        for system in systems_of(peers):
            part = peers[(peers["system"] == system) & peers["peak_connections"].notna()]
            ax.plot(part["peak_connections"], part["jobs_per_s"], "D", color=COLORS.get(system),
                    markersize=7, label=f"{NAMES.get(system, system)} drain at the connections "
                    "it held (peak)")
        note += "; drawn at the peak connections they held"
    elif peers is not None and not peers.empty:
        note += "; not drawn (no connection counts in this run)"
    fig.supxlabel("\n".join(textwrap.wrap(note + ".", 110)), fontsize=7, color=NEUTRAL)
    ax.set_xlabel("DB connections per process (boundq: MAX_DB_CONNECTIONS)")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput against pool size")
    ax.legend(fontsize=8)
    return fig


def throughput_vs_workers(df: pd.DataFrame) -> Figure:
    """Columns: num_workers, worker_processes, jobs_per_s. One bar per combination."""
    fig, (ax,) = new_figure()
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
    fig, axes = new_figure(cols=2, width=5.5)
    for ax, phase, title in ((axes[0], "start", "enqueue -> start"),
                             (axes[1], "finish", "enqueue -> finish")):
        for system in systems_of(df):
            part = rows_of(df, system).sort_values("offered_per_s")
            for pct, style in PCT_STYLES.items():
                col = f"{phase}_{pct}"
                if col in part and part[col].notna().any():
                    ax.plot(part["offered_per_s"], part[col] * 1000, style, marker="o",
                            markersize=3, color=COLORS.get(system), label=f"{system} {pct}")
        if ax.get_lines():
            log_axis(ax)
        ax.set_xlabel("offered load (jobs/s, open loop)")
        ax.set_ylabel("latency (ms)")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, handlelength=3.5)
    return fig


def resources(df: pd.DataFrame, x: str = "label") -> Figure:
    """Columns: <x>, peak_rss_mb, peak_connections, [connection_budget]."""
    fig, axes = new_figure(cols=2, width=5.5)
    labels = df[x].astype(str)
    bars = axes[0].bar(labels, df["peak_rss_mb"], color=system_colors(df))
    axes[0].bar_label(bars, fmt="{:,.0f}", fontsize=7)
    axes[0].set_ylabel("peak RSS (MiB)")
    axes[0].set_title("Peak memory")
    bars = axes[1].bar(labels, df["peak_connections"], color=NEUTRAL, label="peak")
    axes[1].bar_label(bars, fmt="{:,.0f}", fontsize=7)
    if "connection_budget" in df:
        axes[1].plot(labels, df["connection_budget"], "_", color=COLORS["503"], markersize=20,
                     mew=2, label="budget")
        axes[1].legend(fontsize=8)
    axes[1].set_ylabel("DB connections")
    axes[1].set_title("Peak connections (the report's own left out)")
    for ax in axes:
        slant_labels(ax)
    return fig


def bloat_per_job(df: pd.DataFrame, x: str = "label") -> Figure:
    """Columns: <x>, dead_tuples_per_job, wal_bytes_per_job, [system]."""
    fig, axes = new_figure(cols=2, width=5.5)
    labels = df[x].astype(str)
    colors = system_colors(df)
    for ax, col, title in ((axes[0], "dead_tuples_per_job", "Dead tuples per job"),
                           (axes[1], "wal_bytes_per_job", "WAL bytes per job")):
        bars = ax.bar(labels, df[col], color=colors)
        ax.bar_label(bars, fmt="{:,.1f}" if col.startswith("dead") else "{:,.0f}", fontsize=7)
        ax.set_title(title)
        ax.margins(y=0.15)
        slant_labels(ax)
    systems_legend(axes[0], systems_of(df))
    return fig


def peers(df: pd.DataFrame) -> Figure:
    """Columns: system, mode (drain | steady), jobs_per_s. Bars per mode, with the ratio of
    boundq to each peer written on the peer's bar."""
    modes = list(dict.fromkeys(df["mode"]))
    fig, axes = new_figure(cols=len(modes), width=4.5)
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


def predictability(df: pd.DataFrame) -> Figure:
    """Columns (points-predictability.csv): system, offered_per_s, goodput_per_s,
    pickup_p99_ms, arrived, unstarted, capacity_per_s, job_ms, concurrency."""
    fig, axes = new_figure(cols=2, width=5.5, height=4.2)
    bound = float(df["capacity_per_s"].max())
    for system in systems_of(df):
        part = rows_of(df, system).sort_values("offered_per_s")
        color, name = COLORS.get(system), NAMES.get(system, system)
        axes[0].plot(part["offered_per_s"], part["goodput_per_s"], "o-", color=color, label=name)
        axes[1].plot(part["offered_per_s"], part["pickup_p99_ms"], "-", color=color, label=name)
        lower = part["unstarted"] > LOWER_BOUND_SHARE * part["arrived"].clip(lower=1)
        axes[1].plot(part.loc[~lower, "offered_per_s"], part.loc[~lower, "pickup_p99_ms"], "o",
                     color=color)
        axes[1].plot(part.loc[lower, "offered_per_s"], part.loc[lower, "pickup_p99_ms"], "o",
                     mfc="white", color=color)
    job = df.iloc[0]
    axes[0].axhline(bound, color=COLORS["503"], ls="--", lw=1,
                    label=f"capacity bound {plain_number(bound)}/s "
                    f"({int(job['concurrency'])} x 1000 / {int(job['job_ms'])} ms)")
    offered = df["offered_per_s"].sort_values()
    axes[0].plot(offered, offered, ":", color=NEUTRAL, lw=1, label="goodput = offered")
    axes[0].set_ylim(bottom=0, top=max(bound * 1.6, float(df["goodput_per_s"].max()) * 1.15))
    axes[0].set_ylabel("goodput (jobs finished/s)")
    axes[0].set_title("Goodput against offered load")
    axes[1].set_ylabel("pickup p99 (ms, claim - arrival)")
    axes[1].set_title("Pickup p99 against offered load")
    fig.supxlabel("Open markers: a lower bound (more than 1% of the jobs still waited when "
                  "it was read; they count with their wait so far). Dotted: the capacity bound.",
                  fontsize=7, color=NEUTRAL)
    log_axis(axes[1])
    loads = df.drop_duplicates("offered_per_s").sort_values("offered_per_s")
    ticks = [f"{plain_number(r)}\n{x:g}x" for r, x in zip(loads["offered_per_s"],
                                                          loads["load_x"], strict=True)]
    for ax in axes:
        ax.axvline(bound, color=COLORS["503"], ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xticks(list(loads["offered_per_s"]), ticks, fontsize=7)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("offered load (jobs/s, open loop; x the capacity bound)")
        ax.legend(fontsize=7, loc="lower right" if ax is axes[1] else "upper right")
    return fig
