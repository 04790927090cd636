"""Figures of a flood's time series, and of flood runs side by side. Each takes a
DataFrame and returns a matplotlib Figure; no I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from boundq.reports.figstyle import (
    COLORS,
    NEUTRAL,
    PCT_STYLES,
    log_axis,
    new_figure,
    slant_labels,
)


def flood_requests(df: pd.DataFrame) -> Figure:
    """Columns: t, status_2xx, status_429, status_503, status_other (cumulative), waiting,
    succeeded (cumulative): answers per second by status, and the queue."""
    fig, axes = new_figure(cols=2, width=5.5)
    dt = df["t"].diff()
    for col, key in (("status_2xx", "2xx"), ("status_429", "429"), ("status_503", "503"),
                     ("status_other", "other")):
        rate = df[col].diff() / dt
        if rate.fillna(0).abs().sum() > 0 or key == "2xx":
            axes[0].plot(df["t"], rate, color=COLORS[key], label=key)
    axes[0].plot(df["t"], df["succeeded"].diff() / dt, color=NEUTRAL, ls="--",
                 label="jobs processed")
    axes[0].set_title("Answers per second by status")
    axes[0].set_xlabel("seconds")
    axes[0].legend(fontsize=8)
    axes[1].plot(df["t"], df["waiting"], color=COLORS["boundq"], label="waiting")
    axes[1].plot(df["t"], df["processing"], color=COLORS["procrastinate"], label="processing")
    axes[1].set_title("Queue depth")
    axes[1].set_xlabel("seconds")
    axes[1].legend(fontsize=8)
    _shade_drain(df, axes)
    return fig


def flood_server(df: pd.DataFrame, budget: int | None = None) -> Figure:
    """Columns: t, rss_mb, connections, [phase]: the server's memory and connections."""
    fig, axes = new_figure(cols=2, width=5.5)
    axes[0].plot(df["t"], df["rss_mb"], color=COLORS["boundq"])
    axes[0].set_ylim(bottom=0, top=df["rss_mb"].max() * 1.3 + 1)
    axes[0].set_title("Server RSS (MiB, process tree)")
    axes[1].step(df["t"], df["connections"], where="post", color=NEUTRAL, label="open")
    if budget:
        axes[1].axhline(budget, color=COLORS["503"], ls="--", label=f"budget {budget}")
    axes[1].set_ylim(bottom=0, top=max(df["connections"].max(), budget or 0) * 1.25 + 1)
    axes[1].set_title("DB connections of the flood database")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("seconds")
    _shade_drain(df, axes)
    return fig


def flood_latency(df: pd.DataFrame) -> Figure:
    """Locust's history (Aggregated rows): t, users, p50, p95, p99 (ms), requests_per_s."""
    fig, axes = new_figure(cols=2, width=5.5)
    for pct, style in PCT_STYLES.items():
        axes[0].plot(df["t"], df[pct], style, color=COLORS["boundq"], label=pct)
    log_axis(axes[0])
    axes[0].set_ylabel("response time (ms)")
    axes[0].set_title("Response time percentiles (all requests)")
    axes[0].legend(fontsize=8)
    axes[1].plot(df["t"], df["requests_per_s"], color=COLORS["2xx"], label="requests/s")
    axes[1].plot(df["t"], df["failures_per_s"], color=COLORS["503"], label="non-2xx/s")
    twin = axes[1].twinx()
    twin.plot(df["t"], df["users"], color=NEUTRAL, ls=":", label="users")
    twin.set_ylabel("users")
    axes[1].set_title("Locust: requests per second")
    axes[1].legend(fontsize=8, loc="upper left")
    for ax in axes:
        ax.set_xlabel("seconds")
    return fig


QUEUE_PALETTE = ("#1f6feb", "#d29922", "#8957e5", "#2da44e", "#cf222e", "#57606a")


def queue_completions(df: pd.DataFrame, phases: Mapping[str, float | None] | None = None
                      ) -> Figure:
    """Columns: second, queue, finished (jobs finished in that second, from finished_at):
    completions per second per queue, with the phases (the steady queue alone, the flood)
    marked. Seconds in which a queue finished nothing are drawn as 0."""
    fig, axes = new_figure(cols=1, width=9.0)
    ax = axes[0]
    wide = (df.pivot_table(index="second", columns="queue", values="finished", aggfunc="sum")
            .reindex(range(int(df["second"].min()), int(df["second"].max()) + 1))
            .fillna(0)) if not df.empty else pd.DataFrame()
    for i, queue in enumerate(wide.columns):
        ax.plot(wide.index, wide[queue], color=QUEUE_PALETTE[i % len(QUEUE_PALETTE)],
                label=f"queue {queue}", drawstyle="steps-post")
    marks = {"alone_end": "alone ends", "load_start": "flood starts", "load_end": "flood ends"}
    for key, text in marks.items():
        at = (phases or {}).get(key)
        if at is not None and key != "alone_end":
            ax.axvline(at, color=NEUTRAL, ls=":", lw=1)
            ax.text(at, ax.get_ylim()[1], f" {text}", va="top", fontsize=7, color=NEUTRAL)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("seconds (from the first phase's start; PostgreSQL's clock)")
    ax.set_ylabel("jobs finished per second")
    ax.set_title("Completions per second per queue (finished_at)")
    if len(wide.columns):
        ax.legend(fontsize=8)
    return fig


def workflow_latency(df: pd.DataFrame, phases: Mapping[str, float | None] | None = None
                     ) -> Figure:
    """Columns: root_id, created_s, latency_ms, status (loadtests/workflow_scenario.py):
    each fan-out/fan-in graph's latency (root created -> sink finished) at the second its
    root was created, alone and while the flood ran, with the phases marked."""
    fig, axes = new_figure(cols=1, width=9.0)
    ax = axes[0]
    done = df[df["status"] == "success"] if not df.empty else df
    start = (phases or {}).get("load_start")
    flooded = done["created_s"] >= start if start is not None else done["created_s"] < 0
    for mask, label, color in ((~flooded, "alone", QUEUE_PALETTE[0]),
                               (flooded, "beside the flood", QUEUE_PALETTE[1])):
        part = done[mask]
        if not part.empty:
            ax.plot(part["created_s"], part["latency_ms"], "o", ms=3, color=color,
                    label=f"{label} ({len(part)} graphs)")
    for key, text in (("load_start", "flood starts"), ("load_end", "flood ends")):
        at = (phases or {}).get(key)
        if at is not None:
            ax.axvline(at, color=NEUTRAL, ls=":", lw=1)
            ax.text(at, ax.get_ylim()[1], f" {text}", va="top", fontsize=7, color=NEUTRAL)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("root created, seconds from the first phase's start (PostgreSQL's clock)")
    ax.set_ylabel("root created -> sink finished (ms)")
    ax.set_title("Workflow graphs (1 -> N -> 1): latency per graph")
    if not done.empty:
        ax.legend(fontsize=8)
    return fig


def _shade_drain(df: pd.DataFrame, axes: Sequence[Axes]) -> None:
    if "phase" not in df or not (df["phase"] == "drain").any():
        return
    start = df.loc[df["phase"] == "drain", "t"].min()
    for ax in axes:
        ax.axvspan(start, df["t"].max(), color="#d0d7de", alpha=0.4, lw=0)
        ax.text(start, ax.get_ylim()[1], " drain", va="top", fontsize=7, color=NEUTRAL)


def runs_comparison(df: pd.DataFrame) -> Figure:
    """One row per flood run (reports.writer.floods_table): jobs/s offered, accepted and
    processed, and the server's peak RSS, side by side across runs."""
    fig, axes = new_figure(cols=2, width=5.5)
    runs = df["run"].astype(str)
    width = 0.27
    xs = range(len(runs))
    for i, (col, color) in enumerate((("jobs_offered_per_s", NEUTRAL),
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
        slant_labels(ax, size=7)
    return fig
