"""Run folders: reading them into DataFrames, and writing figures and tables into them.

A run folder is reports/runs/<timestamp>/ with a run.json whose "kind" is "flood" (from
`boundq flood`) or "report" (from `boundq report`). The notebook and the report writers
read runs only through these functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

RUNS = Path("reports/runs")


def save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    fig.savefig(path, dpi=dpi)
    return path


def load_run(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    return data


def run_dirs(root: Path = RUNS, kind: str | None = None) -> list[Path]:
    found = []
    for path in sorted(root.glob("*/run.json")):
        try:
            if kind is None or load_run(path.parent).get("kind") == kind:
                found.append(path.parent)
        except (OSError, json.JSONDecodeError):
            continue
    return found


def samples_frame(run_dir: Path) -> pd.DataFrame:
    """The server samples of a flood (one row a second)."""
    path = run_dir / "server_samples.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def history_frame(run_dir: Path) -> pd.DataFrame:
    """Locust's Aggregated history: t (s from start), users, requests_per_s, failures_per_s,
    p50/p95/p99 (ms)."""
    path = run_dir / "locust_stats_history.csv"
    if not path.is_file():
        return pd.DataFrame()
    raw = pd.read_csv(path, na_values=["N/A"])
    agg = raw[raw["Name"] == "Aggregated"].copy()
    if agg.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "t": agg["Timestamp"] - agg["Timestamp"].iloc[0],
        "users": agg["User Count"],
        "requests_per_s": agg["Requests/s"],
        "failures_per_s": agg["Failures/s"],
        "p50": agg["50%"], "p95": agg["95%"], "p99": agg["99%"],
    }).reset_index(drop=True)


def stats_frame(run_dir: Path) -> pd.DataFrame:
    path = run_dir / "locust_stats.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def points_frame(run_dir: Path, name: str) -> pd.DataFrame:
    """One table of a report run (points-<name>.csv)."""
    path = run_dir / f"points-{name}.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def floods_table(root: Path = RUNS) -> pd.DataFrame:
    """One row per flood run: the headline numbers, for comparing runs."""
    rows = []
    for run_dir in run_dirs(root, "flood"):
        run = load_run(run_dir)
        result = run.get("result", {})
        verdict = run.get("verdict", {})
        statuses = result.get("statuses", {})
        rows.append({
            "run": run_dir.name, "scenario": result.get("scenario"),
            "users": result.get("users"), "job_ms": result.get("job_ms"),
            "requests_per_s": result.get("requests_per_s"),
            "jobs_offered_per_s": result.get("jobs_offered_per_s"),
            "jobs_accepted_per_s": result.get("jobs_accepted_per_s"),
            "jobs_processed_per_s": result.get("jobs_processed_per_s_during_load"),
            "overload": result.get("overload_vs_processed"),
            "status_2xx": sum(n for c, n in statuses.items() if c.startswith("2")),
            "status_429": statuses.get("429", 0), "status_503": statuses.get("503", 0),
            "lost": verdict.get("lost"), "peak_rss_mb": result.get("peak_rss_mb"),
            "peak_connections": result.get("peak_connections"),
            "passed": result.get("passed"),
            "fsync": run.get("postgres", {}).get("fsync"),
            "cores": run.get("machine", {}).get("cores"),
        })
    return pd.DataFrame(rows)


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:,.1f}",
                   formats: Mapping[str, Callable[[float], str]] | None = None) -> str:
    """A small GitHub table without the tabulate dependency; `formats` overrides the
    float format of some columns."""
    def cell(col: str, value: Any) -> str:
        if isinstance(value, float):
            if formats and col in formats:
                return formats[col](value)
            return "" if pd.isna(value) else floatfmt.format(value)
        return str(value)

    cols = [str(c) for c in df.columns]
    head = "| " + " | ".join(cols) + " |"
    rule = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(cell(c, v) for c, v in zip(cols, row, strict=True)) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])
