"""`make bench`: drain a pre-filled backlog of no-op jobs and print jobs/s, peak RSS and
CPU per job (the drain process's, plus the server's when it runs on this machine).

Each measurement runs in a fresh child process against a fresh database on the same
cluster (DATABASE_URL, or the embedded one with its durable settings), so peak RSS is
the drain's own and runs do not share caches. Side by side in one run:

  boundq      the real Worker at each MAX_CONCURRENT_JOBS value (fencing, attempts rows)
  naive       the seed's design: 3 loops, one job per claim transaction and per completion
  pgqueuer    PgQueuer's QueueManager (asyncpg), if the `peers` extra is installed
  memory      peak RSS draining the same number of jobs from a 10k and a 1M backlog

    python -m boundq.reports.drain --jobs 100000 --concurrency 1,5,50,500 --naive --peers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from boundq.core import dbadmin, runinfo
from boundq.core.config import load_settings
from boundq.core.migrate import migrate
from boundq.core.pgembed import resolve_database_url
from boundq.reports.peers import (
    pgqueuer_available,
    run_pgqueuer_child,
    run_procrastinate_child,
    setup_pgqueuer,
    setup_procrastinate,
)
from boundq.reports.server_cpu import postmaster_pid, server_cpu_seconds

BENCH_DB = "boundq_bench"


def fill_backlog(url: str, jobs: int) -> None:
    """COPY `jobs` no-op jobs in; deliberately no ANALYZE (a fresh queue has none)."""
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(
        "COPY jobs (name, kind) FROM STDIN"
    ) as copy:
        for _ in range(jobs):
            copy.write_row(("bench", "noop"))


# --- children: one measurement each ------------------------------------------------------
PROGRESS_EVERY_S = 5.0


def _progress(done: int, jobs: int, elapsed: float) -> None:
    print(f"    ... {done:,}/{jobs:,} jobs in {elapsed:.0f}s ({done / elapsed:,.0f}/s)",
          file=sys.stderr, flush=True)

async def _drain_boundq(url: str, jobs: int, concurrency: int, workers: int) -> float:
    from boundq.core.gc_tuning import WORKER_THRESHOLDS, tune_gc
    from boundq.core.worker import Worker

    settings = load_settings(dotenv=None).with_overrides(
        max_concurrent_jobs=concurrency, num_workers=workers,
    )
    worker = Worker(settings, url)
    tune_gc(WORKER_THRESHOLDS)  # as `boundq worker` runs
    started = time.perf_counter()
    await worker.start()
    next_report = started + PROGRESS_EVERY_S
    while worker.metrics.succeeded < jobs:
        await asyncio.sleep(0.005)
        now = time.perf_counter()
        if now >= next_report:
            next_report = now + PROGRESS_EVERY_S
            _progress(worker.metrics.succeeded, jobs, now - started)
    elapsed = time.perf_counter() - started
    await worker.stop(grace_s=1)
    return elapsed


async def _drain_naive(url: str, jobs: int, loops: int) -> float:
    """The seed's design: each loop claims one job per transaction, then completes it."""
    done = 0

    async def loop() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(url) as conn:
            while done < jobs:
                async with conn.transaction():
                    cur = await conn.execute(
                        "UPDATE jobs SET status = 'processing', attempts = attempts + 1, "
                        "lease_owner = 'naive', lease_expires_at = now() + interval '30 s', "
                        "started_at = now() WHERE id = (SELECT id FROM jobs WHERE status = 'new' "
                        "ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) "
                        "RETURNING id"
                    )
                    row = await cur.fetchone()
                if row is None:
                    return
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE jobs SET status = 'success', finished_at = now(), "
                        "lease_owner = NULL, lease_expires_at = NULL WHERE id = %s", (row[0],)
                    )
                done += 1

    async def report() -> None:
        while done < jobs:
            await asyncio.sleep(PROGRESS_EVERY_S)
            _progress(done, jobs, time.perf_counter() - started)

    started = time.perf_counter()
    reporter = asyncio.create_task(report())
    await asyncio.gather(*(loop() for _ in range(loops)))
    reporter.cancel()
    return time.perf_counter() - started


def peak_rss_kb() -> int:
    """This process's own peak RSS. VmHWM belongs to the address space exec made;
    ru_maxrss would carry over the peak of the process that started this one."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def child_main(args: argparse.Namespace) -> None:
    import uvloop

    cpu_started = time.process_time()
    if args.mode == "boundq":
        elapsed = uvloop.run(_drain_boundq(args.url, args.jobs, args.concurrency, args.workers))
    elif args.mode == "naive":
        elapsed = uvloop.run(_drain_naive(args.url, args.jobs, args.workers))
    elif args.mode == "procrastinate":
        elapsed = run_procrastinate_child(args.url, args.jobs, args.workers)
    else:
        elapsed = run_pgqueuer_child(args.url, args.jobs, args.workers, args.batch)
    client_cpu_s = time.process_time() - cpu_started
    peak_kb = peak_rss_kb()
    print(json.dumps({"elapsed_s": elapsed, "jobs_per_s": args.jobs / elapsed,
                      "peak_rss_mb": peak_kb / 1024, "client_cpu_s": client_cpu_s}))


def settle(url: str) -> None:
    """Write the filled backlog out before the clock starts, so no run inherits the last
    fill's checkpoint (every configuration is treated alike; needs the right to CHECKPOINT,
    which the embedded cluster's user has)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass


def run_child(url: str, mode: str, jobs: int, concurrency: int = 0, workers: int = 3,
              batch: int = 50) -> dict[str, Any]:
    argv = [sys.executable, "-m", "boundq.reports.drain", "_child", "--mode", mode, "--url", url,
            "--jobs", str(jobs), "--concurrency", str(concurrency), "--workers", str(workers),
            "--batch", str(batch)]
    env = {**os.environ, "LOG_LEVEL": "warning"}
    # stderr passes through: the child's progress lines and any error show as they happen
    out = subprocess.run(argv, stdout=subprocess.PIPE, text=True, env=env, check=False,
                         timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} child failed with exit code {out.returncode}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- the sweep ---------------------------------------------------------------------------
def measure(base: str, label: str, mode: str, jobs: int, backlog: int | None = None,
            **kw: Any) -> dict[str, Any]:
    url = dbadmin.fresh_database(base, BENCH_DB)
    if mode == "pgqueuer":
        setup_pgqueuer(url, backlog or jobs)
    elif mode == "procrastinate":
        setup_procrastinate(url, backlog or jobs)
    else:
        asyncio.run(migrate(url))
        fill_backlog(url, backlog or jobs)
    settle(url)
    postmaster = postmaster_pid(url)
    server_before = server_cpu_seconds(postmaster) if postmaster else 0.0
    result = run_child(url, mode, jobs, **kw)
    if postmaster:
        wait_for_backends_to_exit(url)
        result["server_cpu_s"] = server_cpu_seconds(postmaster) - server_before
    result.update({"label": label, "mode": mode, "jobs": jobs, "backlog": backlog or jobs, **kw})
    print(f"  {label:<34} {result['jobs_per_s']:>10,.0f} jobs/s   peak RSS "
          f"{result['peak_rss_mb']:6.1f} MiB   CPU/job {cpu_per_job(result)}", flush=True)
    return result


def wait_for_backends_to_exit(url: str, timeout_s: float = 10.0) -> None:
    """The child has exited; its backends exit a moment later. Read the server's CPU
    once they have, so none of their time is missed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        if row is not None and row[0] == 0:
            return
        time.sleep(0.05)


def cpu_us_per_job(result: dict[str, Any]) -> tuple[float, float | None]:
    """(client, server) µs of CPU per job drained; server None unless the cluster is local."""
    per_job = 1e6 / result["jobs"]
    server = result.get("server_cpu_s")
    return result["client_cpu_s"] * per_job, None if server is None else server * per_job


def cpu_per_job(result: dict[str, Any]) -> str:
    """"client + server µs" of CPU per job drained (server only for a local cluster)."""
    client_us, server_us = cpu_us_per_job(result)
    if server_us is None:
        return f"{client_us:,.0f} µs (client; server not local)"
    return f"{client_us:,.0f} + {server_us:,.0f} = {client_us + server_us:,.0f} µs"


def summarize(results: list[dict[str, Any]]) -> None:
    """Best and median round of each configuration, and boundq's best over PgQueuer's."""
    import statistics

    by_label: dict[str, list[float]] = {}
    cpu_by_label: dict[str, list[float]] = {}
    for r in results:
        by_label.setdefault(r["label"], []).append(r["jobs_per_s"])
        client_us, server_us = cpu_us_per_job(r)
        cpu_by_label.setdefault(r["label"], []).append(client_us + (server_us or 0.0))
    cpu_scope = "" if all("server_cpu_s" in r for r in results) else ", client only"
    print(f"summary (jobs/s)            best      median   CPU µs/job (median{cpu_scope})   "
          "rounds")
    for label, rates in by_label.items():
        print(f"  {label:<34} {max(rates):>8,.0f}  {statistics.median(rates):>10,.0f}  "
              f"{statistics.median(cpu_by_label[label]):>10,.0f}   "
              f"{', '.join(f'{x:,.0f}' for x in rates)}")
    boundq = [max(v) for k, v in by_label.items() if k.startswith("boundq")]
    peers = [max(v) for k, v in by_label.items() if k.startswith("pgqueuer")]
    if boundq and peers:
        print(f"  boundq best / PgQueuer best: {max(boundq) / max(peers):.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boundq.reports.drain", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", default="1,5,50,500")
    parser.add_argument("--workers", type=int, default=3, help="NUM_WORKERS for boundq")
    parser.add_argument("--naive", action="store_true", help="also the one-job-per-txn loop")
    parser.add_argument("--peers", action="store_true", help="also PgQueuer (peers extra)")
    parser.add_argument("--memory", action="store_true", help="peak RSS: 10k vs 1M backlog")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds; each measures every configuration once")
    parser.add_argument("--out", default="reports/runs/bench")
    args, rest = parser.parse_known_args(argv)
    if rest and rest[0] == "_child":
        child = argparse.ArgumentParser()
        child.add_argument("_child")
        for flag in ("--mode", "--url"):
            child.add_argument(flag)
        for flag in ("--jobs", "--concurrency", "--workers", "--batch"):
            child.add_argument(flag, type=int)
        child_main(child.parse_args(argv if argv is not None else sys.argv[1:]))
        return 0
    base = resolve_database_url(load_settings().database_url)
    info = runinfo.postgres(base)
    print(f"drain benchmark: {args.jobs:,} no-op jobs per run; PostgreSQL "
          f"{info.get('server_version')} fsync={info.get('fsync')} "
          f"synchronous_commit={info.get('synchronous_commit')}; {os.cpu_count()} cores", flush=True)
    # Each round measures every configuration once, so a slow spell of a shared machine
    # hits all of them alike; the summary keeps each one's best and median round.
    plan: list[tuple[str, str, dict[str, Any]]] = [
        (f"boundq MAX_CONCURRENT_JOBS={value}", "boundq",
         {"concurrency": value, "workers": args.workers})
        for value in (int(v) for v in args.concurrency.split(",") if v.strip())
    ]
    if args.naive:
        plan.append(("naive 3 loops, 1 job/txn", "naive", {"workers": 3}))
    if args.peers:
        if pgqueuer_available():
            plan += [(f"pgqueuer {consumers} consumers x batch {batch}", "pgqueuer",
                      {"workers": consumers, "batch": batch})
                     for consumers, batch in ((5, 50), (2, 100))]
        else:
            print("  pgqueuer: not installed (pip install -e '.[peers]')", flush=True)
    results = []
    for round_no in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"round {round_no} of {args.repeat}", flush=True)
        for label, mode, kw in plan:
            results.append({**measure(base, label, mode, args.jobs, **kw), "round": round_no})
    if args.repeat > 1:
        summarize(results)
    if args.memory:
        drained = min(args.jobs, 10_000)
        for backlog in (10_000, 1_000_000):
            results.append(measure(base, f"memory: {drained:,} of {backlog:,} backlog", "boundq",
                                   min(drained, backlog), backlog=backlog, concurrency=500,
                                   workers=args.workers))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"drain-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps({"server": info, "results": results}, indent=2))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
