"""`boundq report` (`make report`): benchmark sweeps, figures and a summary.

Every point runs against a fresh database on one PostgreSQL (DATABASE_URL, or the
embedded cluster with its durable settings), one after the other, with a progress bar:

  concurrency  drain a backlog at each MAX_CONCURRENT_JOBS (and, with --http, creates/s
               accepted by the API under a short `boundq flood --scenario create`)
  pool         the same at each MAX_DB_CONNECTIONS
  workers      NUM_WORKERS x WORKER_PROCESSES
  steady       fixed arrival rates (open loop): latency percentiles against offered load
  peers        PgQueuer and procrastinate (the `peers` extra), drain and steady state
  predictability  goodput and pickup p99 against offered load, 0.25x to 20x the capacity
               bound, boundq beside the peers (reports/predictability.py)

    boundq report [--quick] [--no-peers] [--no-http] [--no-predictability] [--jobs N]
                  [--phases concurrency,pool,workers,peers,steady,predictability]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from boundq.core.children import child_env
from boundq.core.config import load_settings
from boundq.core.pgembed import resolve_database_url
from boundq.core.runinfo import run_metadata, timestamp
from boundq.reports.drain_run import prepare
from boundq.reports.points import drain_boundq, drain_peer
from boundq.reports.predictability import FULL_LOADS, QUICK_LOADS, LoadPlan, plan_points, point_line, systems
from boundq.reports.report_writer import write_report
from boundq.reports.steady import run_boundq, run_peer

Point = tuple[str, str, Callable[[], dict[str, Any]]]  # (table, label, measure)
PHASES = ("concurrency", "pool", "workers", "peers", "steady", "predictability")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="boundq report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small sweep (a few minutes)")
    p.add_argument("--jobs", type=int, default=None, help="backlog per drain (20000)")
    p.add_argument("--concurrency", default="1,5,50,200")
    p.add_argument("--pools", default="4,8,15,30", help="MAX_DB_CONNECTIONS values")
    p.add_argument("--workers", default="1x1,3x1,6x1,3x2", help="NUM_WORKERS x PROCESSES")
    p.add_argument("--rates", default="250,500,1000,2000,4000", help="offered jobs/s")
    p.add_argument("--steady-seconds", type=float, default=5.0)
    p.add_argument("--sweep-concurrency", type=int, default=50,
                   help="MAX_CONCURRENT_JOBS for the pool, workers and steady sweeps")
    p.add_argument("--no-http", dest="http", action="store_false",
                   help="skip creates/s through the API (Locust floods)")
    p.add_argument("--no-peers", dest="peers", action="store_false")
    p.add_argument("--no-predictability", dest="predictability", action="store_false",
                   help="skip goodput and pickup p99 against offered load")
    p.add_argument("--loads", default=None, help="offered loads as multiples of the "
                   f"capacity bound ({','.join(f'{x:g}' for x in FULL_LOADS)})")
    p.add_argument("--load-seconds", type=float, default=None,
                   help="open-loop seconds per load (10)")
    p.add_argument("--job-ms", type=int, default=10, help="sleep jobs of the load phase")
    p.add_argument("--load-concurrency", type=int, default=5,
                   help="jobs at a time in the load phase (boundq MAX_CONCURRENT_JOBS)")
    p.add_argument("--load-workers", type=int, default=3,
                   help="boundq NUM_WORKERS in the load phase")
    p.add_argument("--phases", default=",".join(PHASES),
                   help="the phases to run, comma-separated")
    p.add_argument("--out", default="reports/runs")
    args = p.parse_args(argv)
    args.phases = [v.strip() for v in args.phases.split(",") if v.strip()]
    unknown = sorted(set(args.phases) - set(PHASES))
    if unknown:
        p.error(f"--phases: unknown {', '.join(unknown)}; known: {', '.join(PHASES)}")
    if not args.predictability and "predictability" in args.phases:
        args.phases.remove("predictability")
    if args.quick:
        args.jobs = args.jobs or 3000
        args.concurrency, args.pools, args.workers = "5,50", "8", "3x1"
        args.rates, args.steady_seconds, args.http = "250,1000", 2.0, False
        args.loads = args.loads or ",".join(f"{x:g}" for x in QUICK_LOADS)
        args.load_seconds = args.load_seconds or 3.0
    args.jobs = args.jobs or 20_000
    args.loads = args.loads or ",".join(f"{x:g}" for x in FULL_LOADS)
    args.load_seconds = args.load_seconds or 10.0
    if args.job_ms < 1 or args.load_concurrency < 1 or args.load_seconds <= 0:
        p.error("--job-ms, --load-concurrency and --load-seconds must be positive")
    return args


def load_plan(args: argparse.Namespace) -> LoadPlan:
    return LoadPlan(job_ms=args.job_ms, concurrency=args.load_concurrency,
                    workers=args.load_workers, seconds=args.load_seconds,
                    tail_s=max(1.0, 0.2 * args.load_seconds))


def http_creates(base: str, concurrency: int, pool: int | None, seconds: int = 6) -> float:
    """creates/s accepted by the API: a short create flood through the public CLI, on the
    report's PostgreSQL, run from the caller's directory like the report."""
    with tempfile.TemporaryDirectory(prefix="boundq-report-") as tmp:
        argv = [sys.executable, "-m", "boundq", "flood", "--scenario", "create",
                "--job-ms", "0", "--time", str(seconds), "--users", "32",
                "--max-queue-depth", "10000000", "--concurrency", str(concurrency),
                "--calibration-seconds", "0", "--out", tmp]
        if pool:
            argv += ["--pool-size", str(pool)]
        subprocess.run(argv, capture_output=True, check=False, timeout=600,
                       env=child_env({"DATABASE_URL": base}))
        runs = sorted(Path(tmp).glob("*/run.json"))
        if not runs:
            return float("nan")
        result = json.loads(runs[-1].read_text()).get("result", {})
        return float(result.get("jobs_accepted_per_s", float("nan")))


def plan(args: argparse.Namespace, base: str) -> list[Point]:
    jobs, c_sweep = args.jobs, args.sweep_concurrency
    points: list[Point] = []

    def drain(env: dict[str, str], extra: dict[str, Any], http: tuple[int, int | None] | None
              ) -> Callable[[], dict[str, Any]]:
        # Few permits drain slowly (a permit is held through its completion's commit):
        # a smaller backlog keeps those points to seconds, not minutes.
        n = min(jobs, max(2000, 400 * int(env.get("MAX_CONCURRENT_JOBS", "5"))))

        def run() -> dict[str, Any]:
            row = {**extra, "jobs": n, **drain_boundq(prepare(base, "boundq", n), n, env)}
            row["connection_budget"] = load_settings(env, dotenv=None).db_connections * int(
                env.get("WORKER_PROCESSES", "1"))
            if http is not None:
                row["creates_per_s"] = http_creates(base, *http)
            return row
        return run

    phases = set(args.phases)
    for c in _ints(args.concurrency) if "concurrency" in phases else []:
        points.append(("concurrency", f"MAX_CONCURRENT_JOBS={c}", drain(
            {"MAX_CONCURRENT_JOBS": str(c)}, {"system": "boundq", "max_concurrent_jobs": c},
            (c, None) if args.http else None)))
    for pool in _ints(args.pools) if "pool" in phases else []:
        points.append(("pool", f"MAX_DB_CONNECTIONS={pool}", drain(
            {"MAX_CONCURRENT_JOBS": str(c_sweep), "MAX_DB_CONNECTIONS": str(pool)},
            {"system": "boundq", "pool_size": pool, "max_concurrent_jobs": c_sweep},
            (c_sweep, pool) if args.http else None)))
    for combo in args.workers.split(",") if "workers" in phases else []:
        w, p = (int(v) for v in combo.lower().split("x"))
        points.append(("workers", f"NUM_WORKERS={w} x WORKER_PROCESSES={p}", drain(
            {"MAX_CONCURRENT_JOBS": str(c_sweep), "NUM_WORKERS": str(w),
             "WORKER_PROCESSES": str(p)},
            {"system": "boundq", "num_workers": w, "worker_processes": p}, None)))
    names = systems(args.peers) if {"peers", "steady", "predictability"} & phases else []
    if "pgqueuer" in names and "peers" in phases:
        for consumers, batch in ((5, 50), (2, 100)):
            points.append(("peers", f"pgqueuer {consumers} consumers x batch {batch}",
                           _peer_drain(base, "pgqueuer", jobs, consumers, batch)))
    if "procrastinate" in names and "peers" in phases:
        points.append(("peers", "procrastinate concurrency 10",
                       _peer_drain(base, "procrastinate", max(1000, jobs // 10), 10, 0)))
    for rate in _ints(args.rates) if "steady" in phases else []:
        for system in names:
            points.append(("steady", f"{system} {rate} jobs/s", _steady(
                base, system, rate, args.steady_seconds, c_sweep)))
    if "predictability" in phases:
        points += [("predictability", label, measure) for label, measure in plan_points(
            base, _floats(args.loads), load_plan(args), names)]
    return points


def _peer_drain(base: str, system: str, jobs: int, consumers: int, batch: int
                ) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        url = prepare(base, system, jobs)
        return {"system": system, "mode": "drain", "consumers": consumers, "batch": batch,
                "jobs": jobs, **drain_peer(url, system, jobs, consumers, batch or 50)}
    return run


def _steady(base: str, system: str, rate: int, seconds: float, concurrency: int
            ) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        url = prepare(base, system, 0)
        if system == "boundq":
            out = run_boundq(url, rate, seconds, {"MAX_CONCURRENT_JOBS": str(concurrency)})
        else:
            out = run_peer(system, url, rate, seconds)
        return {"system": system, "offered_per_s": rate, "seconds": seconds, **out}
    return run


def _skip_saturated(table: str, label: str, done: list[dict[str, Any]]) -> bool:
    """Steady points past twice a system's best drain rate would only queue for minutes."""
    if table != "steady":
        return False
    system, rate = label.split()[0], float(label.split()[1])
    best = max((r.get("jobs_per_s", 0) for r in done if r.get("system") == system
                and "jobs_per_s" in r), default=0)
    return bool(best) and rate > 2 * best


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so the running point stops its worker on the way out


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse_args(list(argv or []))
    base = resolve_database_url(load_settings().database_url)
    run_dir = Path(args.out) / timestamp()
    run_dir.mkdir(parents=True, exist_ok=False)
    meta = {"kind": "report", **run_metadata(base), "options": vars(args)}
    pg = meta["postgres"]
    print(f"boundq report -> {run_dir}/  (PostgreSQL {pg.get('server_version')} fsync="
          f"{pg.get('fsync')} synchronous_commit={pg.get('synchronous_commit')}; "
          f"{meta['machine']['cores']} cores; drains: no-op jobs, backlog {args.jobs:,}; "
          f"loads: sleep {args.job_ms} ms x {args.load_concurrency} at a time, capacity bound "
          f"{load_plan(args).capacity_per_s:,.0f} jobs/s)", flush=True)
    points = plan(args, base)
    tables: dict[str, list[dict[str, Any]]] = {}
    # A bar on a terminal; elsewhere (CI, a pipe) only the numbered lines below.
    with tqdm(points, unit="point", dynamic_ncols=True, file=sys.stdout, disable=None) as bar:
        for index, (table, label, measure) in enumerate(bar, start=1):
            shown = f"[{index}/{len(points)}] {label}"
            bar.set_description(f"{table}: {label}"[:48])
            done = [r for rows in tables.values() for r in rows]
            if _skip_saturated(table, label, done):
                bar.write(f"  {shown:<50} skipped (over twice its drain rate)")
                continue
            try:
                row = {"label": label, **measure()}
            except Exception as exc:  # noqa: BLE001 - one failed point must not end the report
                last = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
                bar.write(f"  {shown:<50} FAILED: {last[0][:160]}")
                continue
            tables.setdefault(table, []).append(row)
            if table == "predictability":
                bar.write(f"  {shown:<50} {point_line(row)}")
                continue
            rate = row.get("jobs_per_s") or row.get("processed_per_s") or 0
            extra = f"  creates/s {row['creates_per_s']:,.0f}" if "creates_per_s" in row else ""
            bar.write(f"  {shown:<50} {rate:>9,.0f} jobs/s{extra}")
    for table, rows in tables.items():
        pd.DataFrame(rows).to_csv(run_dir / f"points-{table}.csv", index=False)
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    summary = write_report(run_dir)
    print(f"summary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
