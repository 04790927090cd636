"""Figures and summary.md of a `boundq report` run folder (points-*.csv + run.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from boundq.reports import figures
from boundq.reports.report_tables import points_table, predictability_table
from boundq.reports.writer import load_run, points_frame, save

SUSTAINED = 0.95  # a steady point "keeps up" when it processed this share of the offer


def peers_frame(run_dir: Path) -> pd.DataFrame:
    """system, mode, jobs_per_s: best drain, and the highest rate sustained in steady state."""
    rows: list[dict[str, Any]] = []
    conc = points_frame(run_dir, "concurrency")
    if not conc.empty:
        rows.append({"system": "boundq", "mode": "drain", "jobs_per_s": conc["jobs_per_s"].max()})
    peers = points_frame(run_dir, "peers")
    for row in peers.itertuples():
        rows.append({"system": row.system, "mode": "drain", "jobs_per_s": row.jobs_per_s})
    steady = points_frame(run_dir, "steady")
    if not steady.empty:
        kept = steady[steady["processed_per_s"] >= SUSTAINED * steady["offered_per_s"]]
        for system, part in kept.groupby("system", sort=False):
            rows.append({"system": system, "mode": "steady",
                         "jobs_per_s": float(part["offered_per_s"].max())})
    return pd.DataFrame(rows)


def report_figures(run_dir: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    conc = points_frame(run_dir, "concurrency")
    pool = points_frame(run_dir, "pool")
    workers = points_frame(run_dir, "workers")
    steady = points_frame(run_dir, "steady")
    peers = points_frame(run_dir, "peers")
    predict = points_frame(run_dir, "predictability")
    if not predict.empty:
        out["goodput and pickup p99 against offered load"] = save(
            figures.predictability(predict), run_dir / "predictability.png")
    if not conc.empty:
        out["throughput against concurrency"] = save(
            figures.throughput_vs_concurrency(conc, peers), run_dir / "throughput-concurrency.png")
    if not pool.empty:
        out["throughput against pool size"] = save(figures.throughput_vs_pool(pool, peers),
                                                   run_dir / "throughput-pool.png")
    if not workers.empty:
        out["throughput against workers and processes"] = save(
            figures.throughput_vs_workers(workers), run_dir / "throughput-workers.png")
    if not steady.empty:
        out["latency against offered load"] = save(figures.latency_vs_load(steady),
                                                   run_dir / "latency-load.png")
    drains = pd.concat([conc, pool, workers, peers], ignore_index=True)
    if not drains.empty and {"peak_rss_mb", "peak_connections"} <= set(drains):
        drains = drains[drains["peak_rss_mb"].notna()]
        out["peak memory and connections (drains)"] = save(figures.resources(drains),
                                                           run_dir / "resources.png")
    bloat = pd.concat([conc, peers], ignore_index=True)
    if not bloat.empty and "wal_bytes_per_job" in bloat:
        out["dead tuples and WAL per job (drains)"] = save(figures.bloat_per_job(bloat),
                                                           run_dir / "bloat.png")
    comparison = peers_frame(run_dir)
    if not comparison.empty and comparison["system"].nunique() > 1:
        out["boundq next to its peers"] = save(figures.peers(comparison), run_dir / "peers.png")
    return out


def _ratios(run_dir: Path) -> list[str]:
    frame = peers_frame(run_dir)
    lines: list[str] = []
    if frame.empty:
        return lines
    for mode, part in frame.groupby("mode", sort=False):
        best = part.groupby("system")["jobs_per_s"].max()
        ours = best.get("boundq")
        for system, value in best.items():
            if system != "boundq" and ours and value:
                lines.append(f"- {mode}: boundq {ours:,.0f} jobs/s vs {system} {value:,.0f} "
                             f"jobs/s = **{ours / value:.2f}x**")
    return lines


def _load_phase_line(opts: dict[str, Any]) -> list[str]:
    if "predictability" not in opts.get("phases", []):
        return []
    return [
        f"- goodput and pickup p99 against offered load: `sleep` {opts.get('job_ms')} ms jobs, "
        f"{opts.get('load_concurrency')} at a time for every system (boundq `boundq worker` "
        f"NUM_WORKERS={opts.get('load_workers')} MAX_CONCURRENT_JOBS="
        f"{opts.get('load_concurrency')}; PgQueuer one QueueManager, concurrency_limit and "
        "batch of the same size; procrastinate worker concurrency of the same size); "
        "open-loop plain SQL INSERTs into each system's own table at "
        f"{opts.get('loads')} x the capacity bound for {opts.get('load_seconds')} s each; "
        "goodput = finishes per second in the run minus its first 20%, pickup = claim - "
        "arrival, both from each system's own timestamps (server clock)",
    ]


def write_report(run_dir: Path) -> Path:
    run = load_run(run_dir)
    pg, machine, opts = run.get("postgres", {}), run.get("machine", {}), run.get("options", {})
    written = report_figures(run_dir)
    lines = [
        f"# boundq report {run_dir.name}",
        "",
        f"- jobs: no-op; drain backlog up to {opts.get('jobs'):,} per point (column jobs), "
        "fresh database each, VACUUM ANALYZEd after the fill, timed by the database (first "
        "claim to last finish); steady state: open-loop arrivals for "
        f"{opts.get('steady_seconds')} s per rate",
        f"- boundq: `boundq worker` (default settings otherwise); pool/workers/"
        f"steady sweeps at MAX_CONCURRENT_JOBS={opts.get('sweep_concurrency')}; creates/s: "
        "`boundq flood --scenario create` (32 users, 6 s, noop)",
        "- PgQueuer: asyncpg, one QueueManager per consumer with its own connection, drain "
        "mode, batch 50 or 100; procrastinate: psycopg connector, worker concurrency 10, "
        "LISTEN/NOTIFY on; both from their docs' recommended setup",
        *_load_phase_line(opts),
        "- latency: boundq from the database clock (created_at to started_at / finished_at); "
        "peers from their handler (wall clock at start minus enqueue time in the payload)",
        f"- PostgreSQL {pg.get('server_version')}: fsync={pg.get('fsync')} synchronous_commit="
        f"{pg.get('synchronous_commit')} full_page_writes={pg.get('full_page_writes')} "
        f"wal_level={pg.get('wal_level')} shared_buffers={pg.get('shared_buffers')} x 8kB",
        f"- machine: {machine.get('cores')} cores ({machine.get('cpu')}), "
        f"{machine.get('memory_gib')} GiB, load average at start "
        f"{machine.get('load_average_at_start')}. Numbers are noisy: compare ratios within "
        "one run.",
        "",
    ]
    ratios = _ratios(run_dir)
    if ratios:
        lines += ["## Ratios (same run, same PostgreSQL)", "", *ratios, ""]
    for title, path in written.items():
        lines += [f"## {title[0].upper()}{title[1:]}", "", f"![{title}]({path.name})", ""]
    predict = points_frame(run_dir, "predictability")
    if not predict.empty:
        lines += ["### Goodput and pickup p99 against offered load (points-predictability.csv)",
                  "", predictability_table(predict), ""]
    for name in ("concurrency", "pool", "workers", "peers", "steady"):
        frame = points_frame(run_dir, name)
        if not frame.empty:
            lines += [f"### points-{name}.csv", "", points_table(frame), ""]
    out = run_dir / "summary.md"
    out.write_text("\n".join(lines))
    return out
