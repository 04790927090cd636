"""The tables of a report's summary.md: every points-*.csv with units in its headers,
latencies in milliseconds, and the predictability table (one row per offered load, a
goodput and a pickup p99 column per system)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from boundq.reports.figstyle import NAMES
from boundq.reports.writer import markdown_table

LOWER_BOUND_SHARE = 0.01  # as in figures.predictability

# (column in points-*.csv, header, scale to the header's unit)
COLUMNS: list[tuple[str, str, float]] = [
    ("label", "point", 1), ("system", "system", 1), ("jobs", "jobs", 1),
    ("jobs_per_s", "jobs/s", 1), ("creates_per_s", "creates/s", 1),
    ("peak_rss_mb", "peak RSS (MiB)", 1), ("peak_connections", "peak connections", 1),
    ("connection_budget", "connection budget", 1),
    ("dead_tuples_per_job", "dead tuples/job", 1), ("wal_bytes_per_job", "WAL bytes/job", 1),
    ("offered_per_s", "offered jobs/s", 1), ("processed_per_s", "processed jobs/s", 1),
    ("start_p50", "enqueue->start p50 (ms)", 1000), ("start_p99", "enqueue->start p99 (ms)", 1000),
    ("finish_p99", "enqueue->finish p99 (ms)", 1000),
]


def milliseconds(value: float) -> str:
    """Enough digits to tell 0.35 ms from 0.0 and no more than a reader needs."""
    if pd.isna(value):
        return ""
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def points_table(frame: pd.DataFrame) -> str:
    """A points-*.csv as a table: known columns, headers with units, latencies in ms."""
    shown = pd.DataFrame()
    formats: dict[str, Callable[[float], str]] = {}
    for col, header, scale in COLUMNS:
        if col not in frame:
            continue
        values = frame[col]
        shown[header] = values * scale if scale != 1 else values
        if header.endswith("(ms)"):
            formats[header] = milliseconds
    return markdown_table(shown, formats=formats)


def predictability_table(frame: pd.DataFrame) -> str:
    """One row per offered load: per system, goodput (jobs/s) and pickup p99 (ms); "≥"
    marks a p99 that is a lower bound (jobs still waiting when it was read)."""
    rows = []
    for load, part in frame.groupby("load_x", sort=True):
        row: dict[str, str] = {
            "offered load": f"{load:g}x bound",
            "offered jobs/s": f"{part['offered_per_s'].iloc[0]:,.0f}"}
        for r in part.itertuples():
            name = NAMES.get(str(r.system), str(r.system))
            lower = r.unstarted > LOWER_BOUND_SHARE * max(int(r.arrived), 1)
            row[f"{name} sent/s"] = f"{r.sent_per_s:,.0f}"
            row[f"{name} goodput/s"] = f"{r.goodput_per_s:,.0f}"
            row[f"{name} pickup p99 (ms)"] = ("≥" if lower else "") + milliseconds(
                float(r.pickup_p99_ms))
        rows.append(row)
    return markdown_table(pd.DataFrame(rows).fillna(""))
