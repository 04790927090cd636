"""The load tests' commands: `boundq flood` (needs the `load` and `report` extras) and
`boundq soak-life` (needs the `report` extras for its figures)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXTRAS_HINT = "install the extra: pip install 'boundq[load]' (make flood does)"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def cmd_flood(args: argparse.Namespace) -> int:
    # First of all: from here on SIGINT and SIGTERM are recorded, never raised (an
    # inherited ignored SIGINT is replaced too), until the verdict and the report are out.
    from boundq.loadtests.signals import Interrupts

    interrupts = Interrupts().install()
    try:
        return _flood(args, interrupts)
    finally:
        interrupts.restore()


def _flood(args: argparse.Namespace, interrupts: Any) -> int:
    try:
        from boundq.loadtests import flood
        from boundq.reports.flood_report import write_flood_report
    except ImportError as exc:
        print(f"boundq flood: {exc}; {EXTRAS_HINT}", file=sys.stderr)
        return 2
    options = flood.FloodOptions(
        scenario=args.scenario, users=args.users, spawn_rate=args.spawn_rate or args.users,
        duration_s=args.time, rate=args.rate, job_ms=args.job_ms, bulk_size=args.bulk_size,
        max_queue_depth=args.max_queue_depth, drain_timeout_s=args.drain_timeout,
        out_root=Path(args.out), num_workers=args.num_workers,
        max_concurrent_jobs=args.max_concurrent_jobs, max_db_connections=args.pool_size,
        ui_port=args.ui_port if args.ui else None, locust_processes=args.locust_processes,
        locust_nice=args.locust_nice,
        calibration_s=args.calibration_seconds, calibration_jobs=args.calibration_jobs,
        pace_threshold=args.pace_threshold, probe_rate=args.probe_rate,
        refusal_p99_ms=args.refusal_p99_ms, accepted_p99_ms=args.accepted_p99_ms,
        extra_workers=args.extra_workers,
        proxied_worker=args.proxied_worker, partition_s=args.partition,
        alone_s=args.alone_seconds, limit_rate=args.limit_rate, limit_burst=args.limit_burst,
        isolation_threshold=args.isolation_threshold, flow_threshold=args.flow_threshold,
        fan_out=args.fan_out, workflow_threshold=args.workflow_threshold)
    if not 0 <= options.locust_nice <= 19:
        print("boundq flood: --locust-nice (FLOOD_LOCUST_NICE) must be 0-19, not "
              f"{options.locust_nice}", file=sys.stderr)
        return 2
    if options.proxied_worker and options.extra_workers < 1:
        options.extra_workers = 1
    try:
        result = flood.run_flood(options, interrupts=interrupts)
    except flood.FloodError as exc:
        print(f"boundq flood: {exc}", file=sys.stderr)
        return 2
    report = write_flood_report(result.run_dir)
    print(f"summary: {report}")
    return 0 if result.passed else 1


def cmd_soak_life(args: argparse.Namespace) -> int:
    from boundq.loadtests.signals import Interrupts

    interrupts = Interrupts().install()
    try:
        return _soak_life(args, interrupts)
    finally:
        interrupts.restore()


def _soak_life(args: argparse.Namespace, interrupts: Any) -> int:
    try:
        from boundq.loadtests import soaklife
        from boundq.loadtests.soaklife_plan import PlanError, SoakOptions, make_plan, quick
    except ImportError as exc:
        print(f"boundq soak-life: {exc}; {EXTRAS_HINT}", file=sys.stderr)
        return 2
    options = SoakOptions(
        minutes=args.minutes, interval_s=args.interval, rate=args.rate,
        load_share=args.load_share, job_ms=args.job_ms, fail_share=args.fail_share,
        calibration_jobs=args.calibration_jobs,
        retention_s=args.retention, num_workers=args.num_workers,
        max_concurrent_jobs=args.max_concurrent_jobs, processes=args.processes,
        tolerance=args.tolerance, flat_ratio=args.flat_ratio,
        drain_timeout_s=args.drain_timeout, out_root=Path(args.out),
        figures=not args.no_figures)
    if args.quick:
        quick(options)
    try:
        make_plan(options)
        result = soaklife.run_soak(options, interrupts=interrupts)
    except (PlanError, soaklife.SoakError) as exc:
        print(f"boundq soak-life: {exc}", file=sys.stderr)
        return 2
    return 0 if result.verdict.passed else 1


def _register_soak_life(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("soak-life", help="long-horizon run: a steady load at half capacity "
                       "while history grows, retention on then off, the xmin horizon pinned; "
                       "throughput, pickup and table sizes per interval")
    e = _env
    p.add_argument("--quick", action="store_true",
                   help="a 24-second form (1 s intervals, retention 5 s, 200 jobs/s unless --rate, "
                   "no calibration) for tests")
    p.add_argument("--minutes", type=float, default=float(e("SOAK_LIFE_MINUTES", "60")),
                   help="length of the load (SOAK_LIFE_MINUTES, default 60)")
    p.add_argument("--interval", type=float, default=float(e("SOAK_LIFE_INTERVAL", "60")),
                   help="seconds per measured interval (SOAK_LIFE_INTERVAL, default 60)")
    p.add_argument("--rate", type=float, default=float(e("SOAK_LIFE_RATE", "0")) or None,
                   help="jobs/s offered; default: --load-share of the calibrated capacity "
                   "(SOAK_LIFE_RATE)")
    p.add_argument("--load-share", type=float, default=float(e("SOAK_LIFE_LOAD_SHARE", "0.5")),
                   help="share of the calibrated capacity offered (default 0.5)")
    p.add_argument("--job-ms", type=int, default=int(e("SOAK_LIFE_JOB_MS", "0")),
                   help="`sleep` jobs of this many ms; 0 = noop (default)")
    p.add_argument("--fail-share", type=float, default=float(e("SOAK_LIFE_FAIL_SHARE", "0.01")),
                   help="share of `fail` jobs (max_attempts 1: dead letters at once), so "
                   "that FAILED_RETENTION_SECONDS has rows to delete (default 0.01)")
    p.add_argument("--calibration-jobs", type=int,
                   default=int(e("SOAK_LIFE_CALIBRATION_JOBS", "30000")),
                   help="backlog drained to measure capacity (default 30000)")
    p.add_argument("--retention", type=float, default=float(e("SOAK_LIFE_RETENTION", "0"))
                   or None, help="RETENTION_SECONDS of the retention-on phase (default: two "
                   "intervals)")
    p.add_argument("--workers", dest="num_workers", type=int,
                   default=int(e("SOAK_LIFE_WORKERS", "3")), help="NUM_WORKERS (default 3)")
    p.add_argument("--concurrency", dest="max_concurrent_jobs", type=int,
                   default=int(e("SOAK_LIFE_CONCURRENCY", "200")),
                   help="MAX_CONCURRENT_JOBS (default 200)")
    p.add_argument("--processes", type=int, default=int(e("SOAK_LIFE_PROCESSES", "1")),
                   help="`boundq worker` processes (default 1)")
    p.add_argument("--tolerance", type=float, default=0.10,
                   help="throughput and p99 within this share of the baseline (0.10)")
    p.add_argument("--flat-ratio", type=float, default=1.2,
                   help="jobs' size with retention on may grow this much (1.2)")
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--out", default=e("SOAK_LIFE_OUT", "reports/runs"), help="runs folder")
    p.set_defaults(func=cmd_soak_life)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("flood", help="load test: API + workers under Locust, then verify no "
                       "acknowledged job was lost")
    e = _env
    p.add_argument("--scenario", default=e("FLOOD_SCENARIO", "mixed"),
                   choices=["mixed", "create", "bulk", "arrival", "step", "tenants",
                            "ratelimited", "workflow"],
                   help="Locust users: mixed reads/writes, single creates, bulk uploads, "
                   "open-loop arrivals at --rate, a step-load shape; flow control: tenants "
                   "(tenant A floods its queue beside tenant B's steady --rate) or "
                   "ratelimited (a rate-limited kind flooded beside unlimited jobs at "
                   "--rate); workflow: fan-out/fan-in graphs (1 -> --fan-out -> 1, one atomic "
                   "bulk upload each, --rate graphs/s) beside single creates (FLOOD_SCENARIO)")
    p.add_argument("--users", type=int, default=int(e("FLOOD_USERS", "50")),
                   help="Locust users (FLOOD_USERS, default 50)")
    p.add_argument("--spawn-rate", type=float, default=float(e("FLOOD_SPAWN_RATE", "0")),
                   help="users started per second (FLOOD_SPAWN_RATE, default: all in 1 s)")
    p.add_argument("--time", type=float, default=float(e("FLOOD_TIME", "30")),
                   help="seconds of load (FLOOD_TIME, default 30)")
    p.add_argument("--rate", default=e("FLOOD_RATE", ""),
                   help="arrival scenario: jobs/s, or Nx = N times the capacity bound "
                   "MAX_CONCURRENT_JOBS x 1000 / job ms; tenants and ratelimited: the steady "
                   "queue's creates/s (default 20); workflow: graphs/s (default 1) "
                   "(FLOOD_RATE)")
    p.add_argument("--alone-seconds", type=float, default=float(e("FLOOD_ALONE_S", "10")),
                   help="tenants, ratelimited, workflow: the steady queue alone this long "
                   "before the flood, its pickup p99 (workflow: graph latency) the reference "
                   "(FLOOD_ALONE_S, default 10)")
    p.add_argument("--fan-out", type=int, default=int(e("FLOOD_FAN_OUT", "100")),
                   help="workflow: children per graph, 1..100 (FLOOD_FAN_OUT, default 100)")
    p.add_argument("--workflow-threshold", type=float,
                   default=float(e("FLOOD_WORKFLOW_THRESHOLD", "0")),
                   help="workflow: fail when the graphs' latency p99 while flooded is above "
                   "this times alone; 0 = printed, not judged (FLOOD_WORKFLOW_THRESHOLD, "
                   "default 0)")
    p.add_argument("--limit-rate", type=float, default=float(e("FLOOD_LIMIT_RATE", "20")),
                   help="ratelimited: the kind's rate_per_s (FLOOD_LIMIT_RATE, default 20)")
    p.add_argument("--limit-burst", type=int, default=int(e("FLOOD_LIMIT_BURST", "10")),
                   help="ratelimited: the kind's burst (FLOOD_LIMIT_BURST, default 10)")
    p.add_argument("--isolation-threshold", type=float,
                   default=float(e("FLOOD_ISOLATION_THRESHOLD", "2")),
                   help="tenants, ratelimited: fail when the steady queue's pickup p99 while "
                   "flooded is above this times its p99 alone (FLOOD_ISOLATION_THRESHOLD, 2)")
    p.add_argument("--flow-threshold", type=float,
                   default=float(e("FLOOD_FLOW_THRESHOLD", "0.5")),
                   help="tenants, ratelimited: fail when the steady queue finishes fewer jobs "
                   "a second while flooded than this times alone (FLOOD_FLOW_THRESHOLD, 0.5)")
    p.add_argument("--job-ms", type=int, default=int(e("FLOOD_JOB_MS", "10")),
                   help="job duration: `sleep` jobs of this many ms; 0 = noop (FLOOD_JOB_MS, "
                   "default 10)")
    p.add_argument("--bulk-size", type=int, default=int(e("FLOOD_BULK_SIZE", "100")))
    p.add_argument("--max-queue-depth", type=int,
                   default=int(e("FLOOD_MAX_QUEUE_DEPTH", "2000")),
                   help="the server's MAX_QUEUE_DEPTH: creates past it get 429 (default 2000)")
    p.add_argument("--drain-timeout", type=float, default=float(e("FLOOD_DRAIN_TIMEOUT", "300")))
    p.add_argument("--workers", dest="num_workers", type=int, help="NUM_WORKERS")
    p.add_argument("--concurrency", dest="max_concurrent_jobs", type=int,
                   help="MAX_CONCURRENT_JOBS")
    p.add_argument("--pool-size", type=int, help="MAX_DB_CONNECTIONS")
    p.add_argument("--locust-processes", type=int,
                   default=int(e("FLOOD_PROCESSES", e("FLOOD_LOCUST_PROCESSES", "1"))),
                   help="load-generator processes: above 1, Locust runs distributed, a "
                   "master and this many workers (FLOOD_PROCESSES, default 1)")
    p.add_argument("--locust-nice", type=int, default=int(e("FLOOD_LOCUST_NICE", "0")),
                   help="lower the load generator's CPU priority by this much (0-19): "
                   "Locust stands in for clients on other machines (FLOOD_LOCUST_NICE, "
                   "default 0)")
    p.add_argument("--calibration-seconds", type=float,
                   default=float(e("FLOOD_CALIBRATION_S", "5")),
                   help="idle calibration before the load: a backlog of about this many "
                   "seconds of work at the capacity bound; 0 = none, pace not measured "
                   "(FLOOD_CALIBRATION_S, default 5)")
    p.add_argument("--calibration-jobs", type=int,
                   default=int(e("FLOOD_CALIBRATION_JOBS", "0")) or None,
                   help="the calibration backlog's size instead (FLOOD_CALIBRATION_JOBS)")
    p.add_argument("--pace-threshold", type=float,
                   default=float(e("FLOOD_PACE_THRESHOLD", "0.9")),
                   help="fail when processing under flood is below this times the idle "
                   "pace, if the flood saturated the workers (FLOOD_PACE_THRESHOLD, 0.9)")
    p.add_argument("--probe-rate", type=float, default=float(e("FLOOD_PROBE_RATE", "20")),
                   help="the door probe: one client's creates/s beside the load, timed at "
                   "the socket (FLOOD_PROBE_RATE, default 20; 0 = no probe)")
    p.add_argument("--refusal-p99-ms", type=float,
                   default=float(e("FLOOD_REFUSAL_P99_MS", "5")),
                   help="fail when the probe's 429 answers take p99 above this "
                   "(FLOOD_REFUSAL_P99_MS, default 5; 0 = not judged)")
    p.add_argument("--accepted-p99-ms", type=float,
                   default=float(e("FLOOD_ACCEPTED_P99_MS", "50")),
                   help="fail when the probe's 201 answers take p99 above this "
                   "(FLOOD_ACCEPTED_P99_MS, default 50; 0 = not judged)")
    p.add_argument("--extra-workers", type=int, default=int(e("FLOOD_EXTRA_WORKERS", "0")),
                   help="`boundq worker` processes beside `boundq serve`, each in its own "
                   "process group (FLOOD_EXTRA_WORKERS, default 0)")
    p.add_argument("--proxied-worker", action="store_true",
                   default=e("FLOOD_PROXIED_WORKER", "0") not in ("0", "", "no", "false"),
                   help="the last extra worker reaches PostgreSQL through the fault proxy, "
                   "in a network namespace when allowed (FLOOD_PROXIED_WORKER=1)")
    p.add_argument("--partition", type=float, default=float(e("FLOOD_PARTITION", "0")),
                   help="black-hole the proxied worker's network this many seconds during "
                   "the load, then reset its connections (FLOOD_PARTITION)")
    p.add_argument("--ui", action="store_true", help="the Locust web UI instead of a headless "
                   "run; Ctrl-C ends it")
    p.add_argument("--ui-port", type=int, default=int(e("FLOOD_UI_PORT", "8089")))
    p.add_argument("--out", default=e("FLOOD_OUT", "reports/runs"), help="runs folder")
    p.set_defaults(func=cmd_flood)
    _register_soak_life(sub)
