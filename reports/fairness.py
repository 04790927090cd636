"""Weighted fairness through `boundq worker`: three queues with weights (1:2:5 by default),
all saturated with `sleep` jobs, drained for a while; each queue's share of completions
per window (by finished_at, PostgreSQL's clock) against its weight share.

A fresh database; each queue's backlog filled with SQL (COPY) at 1.2x what the bound
(permits x 1000 / job ms) could take from it in --seconds, VACUUM ANALYZEd; weights set
with `boundq queues NAME --weight W`; then `boundq worker` runs until --seconds passed or
one queue ran dry (its share would go to the others), and gets SIGTERM. Only whole
windows before the first queue's last completion count.

    python -m boundq.reports.fairness --weights 1,2,5 --job-ms 10 --seconds 40 --window 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from boundq.core import dbadmin
from boundq.core.children import child_env
from boundq.core.config import load_settings
from boundq.core.migrate import migrate
from boundq.core.pgembed import resolve_database_url
from boundq.reports import dbwatch
from boundq.reports.drain_run import worker_process

FAIR_DB = "boundq_fairness"
NAMES = ("low", "mid", "high", "q4", "q5", "q6")


def fill(url: str, queue: str, jobs: int, job_ms: int) -> None:
    payload = json.dumps({"ms": job_ms})
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(
        "COPY jobs (name, kind, queue, payload) FROM STDIN"
    ) as copy:
        for _ in range(jobs):
            copy.write_row(("fairness", "sleep", queue, payload))


def set_weight(url: str, queue: str, weight: int) -> None:
    subprocess.run([sys.executable, "-m", "boundq", "queues", queue, "--weight", str(weight)],
                   env=child_env({"DATABASE_URL": url}), check=True, capture_output=True,
                   timeout=60)


def shares(rows: list[tuple[datetime, str]], weights: dict[str, int], window_s: float
           ) -> list[dict[str, Any]]:
    """Completions (finished_at, queue) in time order -> one row per whole window before
    the first queue's last completion: each queue's share and its weight share."""
    if not rows:
        return []
    last = {q: max((t for t, qq in rows if qq == q), default=rows[0][0]) for q in weights}
    end = min(last.values())
    start = rows[0][0]
    total = sum(weights.values())
    out = []
    edge = start
    while edge + timedelta(seconds=window_s) <= end:
        stop = edge + timedelta(seconds=window_s)
        chunk = [q for t, q in rows if edge <= t < stop]
        n = len(chunk)
        row: dict[str, Any] = {"from_s": round((edge - start).total_seconds(), 1),
                               "completions": n, "per_s": round(n / window_s, 1)}
        for q, w in weights.items():
            share = chunk.count(q) / n if n else 0.0
            row[q] = {"share": round(share, 4), "weight_share": round(w / total, 4),
                      "off": round(share / (w / total) - 1, 4)}
        out.append(row)
        edge = stop
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    weights = dict(zip(NAMES, (int(w) for w in args.weights.split(",")), strict=False))
    base = resolve_database_url(load_settings().database_url)
    url = dbadmin.fresh_database(base, FAIR_DB)
    asyncio.run(migrate(url))
    bound = args.concurrency * 1000 / args.job_ms
    total = sum(weights.values())
    for q, w in weights.items():
        fill(url, q, int(1.2 * bound * args.seconds * w / total) + 100, args.job_ms)
        set_weight(url, q, w)
    with dbwatch.connect(url) as conn:
        conn.execute("VACUUM ANALYZE")
        env = {"NUM_WORKERS": str(args.workers), "MAX_CONCURRENT_JOBS": str(args.concurrency)}
        started = time.monotonic()
        with worker_process(url, env):
            while time.monotonic() - started < args.seconds:
                dry = conn.execute("SELECT count(DISTINCT queue) FROM jobs WHERE status = "
                                   "'new'").fetchone()
                if dry is not None and int(dry[0]) < len(weights):
                    break
                time.sleep(0.5)
        rows = [(r[0], str(r[1])) for r in conn.execute(
            "SELECT finished_at, queue FROM jobs WHERE finished_at IS NOT NULL "
            "ORDER BY finished_at, id").fetchall()]
    windows = shares(rows, weights, args.window)
    worst = max((abs(w[q]["off"]) for w in windows for q in weights), default=None)
    return {"weights": weights, "job_ms": args.job_ms, "concurrency": args.concurrency,
            "workers": args.workers, "window_s": args.window, "completions": len(rows),
            "windows": windows, "worst_relative_deviation": worst}


def print_result(result: dict[str, Any]) -> None:
    weights = result["weights"]
    head = "  ".join(f"{q} (w {w}) share / target / off" for q, w in weights.items())
    print(f"window  jobs/s  {head}")
    for w in result["windows"]:
        cells = "  ".join(f"{w[q]['share']:.3f} / {w[q]['weight_share']:.3f} / "
                          f"{w[q]['off']:+.1%}" for q in weights)
        print(f"{w['from_s']:>5.0f}s  {w['per_s']:>6,.0f}  {cells}")
    worst = result["worst_relative_deviation"]
    print(f"completions: {result['completions']:,}; worst relative deviation from the weight "
          f"share in a {result['window_s']:g} s window: "
          + ("n/a (no whole window)" if worst is None else f"{worst:.1%}"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m boundq.reports.fairness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="1,2,5", help="weights of the queues low, mid, high")
    p.add_argument("--job-ms", type=int, default=10)
    p.add_argument("--seconds", type=float, default=40.0, help="how long the worker drains")
    p.add_argument("--window", type=float, default=10.0, help="seconds per window")
    p.add_argument("--concurrency", type=int, default=8, help="MAX_CONCURRENT_JOBS")
    p.add_argument("--workers", type=int, default=3, help="NUM_WORKERS")
    p.add_argument("--out", default="reports/runs/bench")
    args = p.parse_args(argv)
    result = run(args)
    print_result(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"fairness-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
