"""Figures of a soak-life run (loadtests/soaklife.py), one row per interval of its
intervals.csv, with the phases drawn as bands:

  soak_throughput   completions/s against offered/s, the baseline's ±tolerance band;
                    pickup p50 and p99 (log axis)
  soak_sizes        total, heap and index size of jobs, the claim index, job_attempts and
                    job_tallies; rows kept (finished rows from the tallies, live tuples)
  soak_vacuum       dead tuples of jobs and job_attempts, a marker on each interval in
                    which jobs was autovacuumed; the xmin horizon's age

Each figure function takes a DataFrame and returns a matplotlib Figure (no I/O);
write_soak_figures(run_dir) reads the run folder and saves them as PNG.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from boundq.reports.figstyle import (
    COLORS,
    NEUTRAL,
    PCT_STYLES,
    log_axis,
    new_figure,
    plain_number,
)

CSV_NAME = "intervals.csv"
PHASE_COLORS = {"retention-on": "#2da44e", "retention-off": "#1f6feb",
                "pressure": "#cf222e", "recovery": "#8957e5", "drain": "#57606a"}
MB = 2**20


def load_intervals(run_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(run_dir / CSV_NAME)
    scale = 60.0 if df["t_end_s"].max() > 600 else 1.0
    df.attrs["unit"] = "minutes" if scale == 60 else "seconds"
    df["t"] = df["t_end_s"] / scale
    df["t0"] = df["t_start_s"] / scale
    return df


def _unit(df: pd.DataFrame) -> str:
    return str(df.attrs.get("unit", "seconds"))


def phase_bands(ax: Axes, df: pd.DataFrame, labels: bool = True) -> None:
    """A light band per phase, named at the top of the axes."""
    for phase, part in df.groupby("phase", sort=False):
        start, end = float(part["t0"].min()), float(part["t"].max())
        color = PHASE_COLORS.get(str(phase), NEUTRAL)
        ax.axvspan(start, end, color=color, alpha=0.08, lw=0)
        if labels and phase != "drain":  # a few seconds wide: its name would overlap
            ax.text((start + end) / 2, 1.0, str(phase), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=7, color=color)


def soak_throughput(df: pd.DataFrame, baseline: dict[str, Any] | None = None,
                    tolerance: float = 0.1) -> Figure:
    fig, axes = new_figure(cols=2, width=6.0, height=4.2)
    load = df[df["phase"] != "drain"]
    ax = axes[0]
    ax.step(load["t"], load["completions_per_s"], where="pre", color=COLORS["boundq"],
            label="completed/s")
    ax.step(load["t"], load["offered_per_s"], where="pre", color=NEUTRAL, ls="--", lw=1,
            label="offered/s")
    base = (baseline or {}).get("completions_per_s")
    if base:
        ax.axhspan(base * (1 - tolerance), base * (1 + tolerance), color=COLORS["2xx"],
                   alpha=0.12, lw=0, label=f"baseline ±{tolerance:.0%}")
    ax.set_ylim(bottom=0, top=float(load["completions_per_s"].max()) * 1.25 + 1)
    ax.set_ylabel("jobs/s (per interval)")
    ax.set_title("Completions per second", pad=14)
    ax = axes[1]
    for pct in ("p50", "p99"):
        col = f"pickup_{pct}_ms"
        ax.step(load["t"], load[col], where="pre", ls=PCT_STYLES[pct], color=COLORS["boundq"],
                label=f"pickup {pct}")
    p99 = (baseline or {}).get("pickup_p99_ms")
    if p99:
        ax.axhline(p99 * (1 + tolerance), color=COLORS["2xx"], lw=1,
                   label=f"baseline p99 +{tolerance:.0%}")
    if load["pickup_p99_ms"].notna().any() and float(load["pickup_p99_ms"].max()) > 0:
        log_axis(ax)
    ax.set_ylabel("ms (started_at - run_at, first attempts)")
    ax.set_title("Pickup latency", pad=14)
    for ax in axes:
        phase_bands(ax, load)
        ax.set_xlabel(_unit(df))
        ax.legend(fontsize=7, loc="lower left")
    return fig


def soak_sizes(df: pd.DataFrame) -> Figure:
    fig, axes = new_figure(cols=2, width=6.0, height=4.2)
    ax = axes[0]
    for col, label, style in (("jobs_total_bytes", "jobs total", "-"),
                              ("jobs_heap_bytes", "jobs heap", "--"),
                              ("jobs_index_bytes", "jobs indexes", ":"),
                              ("jobs_claim_idx_bytes", "claim index", "-."),
                              ("job_attempts_total_bytes", "job_attempts total", "-"),
                              ("job_tallies_total_bytes", "job_tallies total", "-")):
        color = {"job_attempts": COLORS["pgqueuer"], "job_tallies": COLORS["procrastinate"]
                 }.get(col.rsplit("_", 2)[0], COLORS["boundq"])
        ax.plot(df["t"], df[col] / MB, style, color=color, label=label)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("MB")
    ax.set_title("Table and index sizes", pad=14)
    ax = axes[1]
    ax.plot(df["t"], df["finished_rows"], color=COLORS["boundq"], label="finished rows (tallies)")
    ax.plot(df["t"], df["jobs_live_tup"], ls="--", color=NEUTRAL, label="jobs live tuples (stats)")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("rows")
    ax.yaxis.set_major_formatter(FuncFormatter(plain_number))
    ax.set_title("History kept", pad=14)
    for ax in axes:
        phase_bands(ax, df)
        ax.set_xlabel(_unit(df))
        ax.legend(fontsize=7, loc="upper left")
    return fig


def autovacuum_times(df: pd.DataFrame, table: str = "jobs") -> list[float]:
    """The end of each interval during which `table` was autovacuumed (its count rose
    since the interval before)."""
    counts = df[f"{table}_autovacuum_count"].fillna(0)
    rose = counts.diff().fillna(counts) > 0
    return [float(t) for t in df.loc[rose, "t"]]


def soak_vacuum(df: pd.DataFrame) -> Figure:
    fig, axes = new_figure(cols=2, width=6.0, height=4.2)
    ax = axes[0]
    ax.plot(df["t"], df["jobs_dead_tup"], color=COLORS["boundq"], label="jobs dead tuples")
    ax.plot(df["t"], df["job_attempts_dead_tup"], color=COLORS["pgqueuer"],
            label="job_attempts dead tuples")
    # One marker per interval in which jobs was autovacuumed, on the dead tuples it left.
    marks: Sequence[float] = autovacuum_times(df)
    at = df.set_index("t")["jobs_dead_tup"]
    ax.plot(marks, [at[t] for t in marks], "v", color=COLORS["503"], markersize=4,
            label="autovacuum of jobs ran in the interval")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(FuncFormatter(plain_number))
    ax.set_ylabel("dead tuples (pg_stat_user_tables)")
    ax.set_title("Dead tuples and autovacuum runs", pad=14)
    ax = axes[1]
    ax.plot(df["t"], df["xmin_age"], color=COLORS["503"], label="xmin horizon age (xids)")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("transactions")
    twin = ax.twinx()
    twin.plot(df["t"], df["oldest_xact_s"], ":", color=NEUTRAL, label="oldest transaction (s)")
    twin.set_ylim(bottom=0)
    twin.set_ylabel("seconds")
    ax.set_title("The xmin horizon", pad=14)
    for ax in axes:
        phase_bands(ax, df)
        ax.set_xlabel(_unit(df))
        ax.legend(fontsize=7, loc="upper left")
    twin.legend(fontsize=7, loc="upper right")
    return fig


def write_soak_figures(run_dir: Path) -> list[Path]:
    df = load_intervals(run_dir)
    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    verdict = meta.get("verdict") or {}
    tolerance = float((meta.get("options") or {}).get("tolerance", 0.1))
    figures = {"soak_throughput.png": soak_throughput(df, verdict.get("baseline"), tolerance),
               "soak_sizes.png": soak_sizes(df), "soak_vacuum.png": soak_vacuum(df)}
    paths = []
    for name, fig in figures.items():
        path = run_dir / name
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths
