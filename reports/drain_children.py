"""The drains that run inside a child process of the benchmark (everything but the
`boundq worker` command, which is its own process): each drains `jobs` jobs and exits,
printing one JSON line with its own clock's elapsed time. The benchmark times them from
the database, and reads their CPU and memory from outside (reports/procwatch.py).

  in-process     boundq's Worker class in this process, as `boundq worker` builds it
  naive          the seed's design: loops claiming one job per transaction
  pgqueuer       PgQueuer's QueueManagers (reports/peers.py)
  procrastinate  procrastinate's worker (reports/peers.py)

    python -m boundq.reports.drain_children MODE URL JOBS [--concurrency C] [--workers W]
        [--batch B]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import psycopg

from boundq.core.config import load_settings
from boundq.reports.peers import run_pgqueuer_child, run_procrastinate_child

MODES = ("in-process", "naive", "pgqueuer", "procrastinate")
PROGRESS_EVERY_S = 5.0

NAIVE_CLAIM = """
UPDATE jobs SET status = 'processing', attempts = attempts + 1, lease_owner = 'naive',
       lease_expires_at = now() + interval '30 s', started_at = now()
WHERE id = (SELECT id FROM jobs WHERE status = 'new' AND queue = 'default'
            ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
NAIVE_COMPLETE = """
UPDATE jobs SET status = 'success', finished_at = now(), lease_owner = NULL,
       lease_expires_at = NULL
WHERE id = %s
"""


def _progress(done: int, jobs: int, elapsed: float) -> None:
    print(f"    ... {done:,}/{jobs:,} jobs in {elapsed:.0f}s ({done / elapsed:,.0f}/s)",
          file=sys.stderr, flush=True)


async def drain_in_process(url: str, jobs: int, concurrency: int, workers: int) -> float:
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


async def drain_naive(url: str, jobs: int, loops: int) -> float:
    """The seed's design: each loop claims one job per transaction, then completes it."""
    done = 0

    async def loop() -> None:
        nonlocal done
        async with await psycopg.AsyncConnection.connect(url) as conn:
            while done < jobs:
                async with conn.transaction():
                    row = await (await conn.execute(NAIVE_CLAIM)).fetchone()
                if row is None:
                    return
                async with conn.transaction():
                    await conn.execute(NAIVE_COMPLETE, (row[0],))
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


def run(mode: str, url: str, jobs: int, concurrency: int, workers: int, batch: int) -> float:
    import uvloop

    if mode == "in-process":
        return float(uvloop.run(drain_in_process(url, jobs, concurrency, workers)))
    if mode == "naive":
        return float(uvloop.run(drain_naive(url, jobs, workers)))
    if mode == "procrastinate":
        return run_procrastinate_child(url, jobs, workers)
    return run_pgqueuer_child(url, jobs, workers, batch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m boundq.reports.drain_children")
    p.add_argument("mode", choices=MODES)
    p.add_argument("url")
    p.add_argument("jobs", type=int)
    p.add_argument("--concurrency", type=int, default=0)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--batch", type=int, default=50)
    args = p.parse_args(argv)
    elapsed = run(args.mode, args.url, args.jobs, args.concurrency, args.workers, args.batch)
    print(json.dumps({"client_elapsed_s": elapsed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
