"""`make bench`: drain a pre-filled backlog of no-op jobs and print jobs/s, peak RSS and
CPU per job (the drain process tree's, plus the server's when it runs on this machine).

Every run gets a fresh database on the same cluster (DATABASE_URL, or the embedded one
with its durable settings), its backlog filled with SQL (COPY, or the peer's own batch
enqueue), VACUUM ANALYZEd and checkpointed; the drain is timed by the database, from
the first claim to the last finish (reports/drain_run.py). Side by side in one run:

  boundq      `boundq worker`, the command users run, at each MAX_CONCURRENT_JOBS
              (NUM_WORKERS=--workers, LOG_LEVEL=warning), stopped with SIGTERM once the
              database shows every job finished
  in-process  (--in-process) boundq's Worker class started inside a benchmark child,
              beside the CLI at each setting; the CLI / in-process ratio is printed
  naive       the seed's design: 3 loops, one job per claim transaction and per completion
  pgqueuer    PgQueuer's QueueManager (asyncpg), if the `peers` extra is installed
  memory      peak RSS draining the same number of jobs from a 10k and a 1M backlog
  delayed     (--delayed-ratio R) each boundq setting again beside R x --jobs jobs due in a
              day at priority 9, written after the runnable ones as boundq writes them
              (`scheduled`; --delayed-plain: an INSERT that leaves status to its default,
              which the scout moves), drained to the last runnable job; the ratio to the
              drain alone is printed per round
  kinds       (--kinds noop,wasm) each boundq level again with a backlog of `wasm` jobs
              (add(2, 3) of a small module; reports/drain_kinds.py), right after its noop
              drain; the wasm / noop ratios of jobs/s and CPU per job are printed per round

    python -m boundq.reports.drain --jobs 100000 --concurrency 1,5,50,200,500 --naive --peers
    python -m boundq.reports.drain --jobs 20000 --concurrency 200 --kinds noop,wasm --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from boundq.core import runinfo
from boundq.core.config import load_settings
from boundq.core.pgembed import resolve_database_url
from boundq.reports import dbwatch
from boundq.reports.drain_flow import FLOW_VARIANTS, apply_flow
from boundq.reports.drain_kinds import KINDS, label_of, print_kind_ratios, summarize_kinds
from boundq.reports.drain_run import SYSTEM_OF, drain_child, drain_cli, prepare
from boundq.reports.drain_summary import cpu_per_job, print_round, summarize
from boundq.reports.peers import pgqueuer_available
from boundq.reports.server_cpu import postmaster_pid, server_cpu_seconds

# One configuration: (label, mode, options of the drain).
Config = tuple[str, str, dict[str, Any]]


def measure(base: str, label: str, mode: str, jobs: int, backlog: int | None = None,
            concurrency: int = 0, workers: int = 3, batch: int = 50, flow: str = "none",
            delayed: int = 0, delayed_as: str = "boundq", kind: str = "noop"
            ) -> dict[str, Any]:
    """One drain of `jobs` jobs of `kind` (of a `backlog`, all by default) in a fresh
    database, under the flow settings `flow` (reports/drain_flow.py), beside `delayed`
    future jobs written after them (boundq only)."""
    backlog = backlog or jobs
    url = prepare(base, SYSTEM_OF[mode], backlog, delayed=delayed, delayed_as=delayed_as,
                  kind=kind)
    if delayed:
        backlog += delayed
    if SYSTEM_OF[mode] == "boundq":
        apply_flow(url, flow)
    postmaster = postmaster_pid(url)
    server_before = server_cpu_seconds(postmaster) if postmaster else 0.0
    if mode == "boundq":
        env = {"NUM_WORKERS": str(workers), "MAX_CONCURRENT_JOBS": str(concurrency)}
        result = drain_cli(url, env, first_n=jobs if jobs < backlog else None)
    else:
        result = drain_child(url, mode, jobs, concurrency, workers, batch)
    if postmaster:
        dbwatch.wait_for_backends_to_exit(url)
        result["server_cpu_s"] = server_cpu_seconds(postmaster) - server_before
    result.update({"label": label, "mode": mode, "jobs": result["finished"],
                   "backlog": backlog, "concurrency": concurrency, "workers": workers,
                   "batch": batch, "flow": flow, "delayed": delayed, "kind": kind})
    print(f"  {label:<40} {result['jobs_per_s']:>10,.0f} jobs/s   peak RSS "
          f"{result['peak_rss_mb']:6.1f} MiB   CPU/job {cpu_per_job(result)}", flush=True)
    return result


def plan(args: argparse.Namespace) -> list[Config]:
    """Every configuration, measured once per round: a slow spell of a shared machine
    then hits all of them alike."""
    levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    configs: list[Config] = []
    flows = [v.strip() for v in args.flow.split(",") if v.strip()]
    kinds = [v.strip() for v in args.kinds.split(",") if v.strip()]
    for value in levels:
        kw: dict[str, Any] = {"concurrency": value, "workers": args.workers}
        configs.append((f"boundq MAX_CONCURRENT_JOBS={value}", "boundq", kw))
        for kind in kinds:
            if kind != "noop":  # right after the noop drain of the same level
                configs.append((label_of(value, kind), "boundq", {**kw, "kind": kind}))
        if args.delayed_ratio:
            configs.append((f"boundq MAX_CONCURRENT_JOBS={value} + {args.delayed_ratio}x delayed",
                            "boundq", {**kw, "delayed": args.delayed_ratio * args.jobs,
                                       "delayed_as": "plain" if args.delayed_plain else "boundq"}))
        for variant in flows:
            if variant != "none":
                configs.append((f"boundq MAX_CONCURRENT_JOBS={value} flow={variant}", "boundq",
                                {**kw, "flow": variant}))
        if args.in_process:
            configs.append((f"in-process MAX_CONCURRENT_JOBS={value}", "in-process", kw))
    if args.naive:
        configs.append(("naive 3 loops, 1 job/txn", "naive", {"workers": 3}))
    if args.peers:
        if pgqueuer_available():
            configs += [(f"pgqueuer {consumers} consumers x batch {batch}", "pgqueuer",
                         {"workers": consumers, "batch": batch})
                        for consumers, batch in ((5, 50), (2, 100))]
        else:
            print("  pgqueuer: not installed (pip install -e '.[peers]'); skipped", flush=True)
    return configs


def _print_delayed_ratios(results: list[dict[str, Any]]) -> None:
    alone = {r["concurrency"]: r["jobs_per_s"] for r in results
             if r["mode"] == "boundq" and not r.get("delayed")}
    for r in results:
        if r.get("delayed") and alone.get(r["concurrency"]):
            print(f"  beside {r['delayed']:,} delayed jobs: {r['jobs_per_s'] / alone[r['concurrency']]:.2f}"
                  f" x the drain alone (MAX_CONCURRENT_JOBS={r['concurrency']})", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m boundq.reports.drain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", default="1,5,50,200,500",
                        help="MAX_CONCURRENT_JOBS values")
    parser.add_argument("--workers", type=int, default=3, help="NUM_WORKERS for boundq")
    parser.add_argument("--in-process", action="store_true",
                        help="also boundq's Worker inside a benchmark child, beside the CLI")
    parser.add_argument("--naive", action="store_true", help="also the one-job-per-txn loop")
    parser.add_argument("--peers", action="store_true", help="also PgQueuer (peers extra)")
    parser.add_argument("--memory", action="store_true", help="peak RSS: 10k vs 1M backlog")
    parser.add_argument("--delayed-ratio", type=int, default=0,
                        help="also drain beside this many times --jobs future jobs")
    parser.add_argument("--delayed-plain", action="store_true",
                        help="the delayed jobs as a plain INSERT leaves them (status new)")
    parser.add_argument("--flow", default="none",
                        help="flow settings to drain under besides none, comma-separated: "
                        f"{', '.join(FLOW_VARIANTS)} (reports/drain_flow.py); each boundq "
                        "level is measured under each, in every round")
    parser.add_argument("--kinds", default="noop",
                        help=f"job kinds of the boundq backlogs, comma-separated: "
                        f"{', '.join(KINDS)} (reports/drain_kinds.py); each beside noop "
                        "at every level, in every round")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; each measures every configuration once")
    parser.add_argument("--out", default="reports/runs/bench")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.repeat < 1:
        parser.error("--jobs and --repeat must be at least 1")
    if not 0 <= args.delayed_ratio <= 100:
        parser.error("--delayed-ratio must be between 0 and 100")
    unknown = {v.strip() for v in args.flow.split(",") if v.strip()} - set(FLOW_VARIANTS)
    if unknown:
        parser.error(f"--flow: unknown {', '.join(sorted(unknown))}")
    unknown = {v.strip() for v in args.kinds.split(",") if v.strip()} - set(KINDS)
    if unknown:
        parser.error(f"--kinds: unknown {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = resolve_database_url(load_settings().database_url)
    info = runinfo.postgres(base)
    print(f"drain benchmark: {args.jobs:,} jobs per run ({args.kinds}), VACUUM ANALYZEd; timed by the "
          f"database (first claim to last finish); PostgreSQL {info.get('server_version')} "
          f"fsync={info.get('fsync')} synchronous_commit={info.get('synchronous_commit')}; "
          f"{os.cpu_count()} cores", flush=True)
    configs = plan(args)
    results: list[dict[str, Any]] = []
    for round_no in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"round {round_no} of {args.repeat}", flush=True)
        this_round = [{**measure(base, label, mode, args.jobs, **kw), "round": round_no}
                      for label, mode, kw in configs]
        print_round(this_round)
        print_kind_ratios(this_round)
        _print_delayed_ratios(this_round)
        results += this_round
    if args.repeat > 1:
        summarize(results)
        summarize_kinds(results)
    if args.memory:
        drained = min(args.jobs, 10_000)
        for backlog in (10_000, 1_000_000):
            results.append(measure(base, f"memory: {drained:,} of {backlog:,} backlog", "boundq",
                                   min(drained, backlog), backlog=backlog, concurrency=500,
                                   workers=args.workers))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"drain-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"server": info, "options": vars(args), "results": results},
                               indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
