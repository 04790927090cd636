"""`/stats` against history: its median uncached cost with a small and a large history,
side by side (the calls alternate between the two databases, so a slow spell of a shared
machine hits both alike).

Each history is made the way production makes it: a backlog of no-op jobs drained by
`boundq worker` (so the tallies are the ones the moving statements keep), then 1,000 jobs
left waiting, VACUUM ANALYZEd (as autovacuum leaves it). A sample is one `compute_stats`
call, what GET /stats runs when its one-second cache is cold, on an autocommit connection
of its own.

    python -m boundq.reports.stats_bench --sizes 10000,310000 --samples 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import psycopg

from boundq.core.config import load_settings
from boundq.core.pgembed import resolve_database_url
from boundq.reports import dbwatch
from boundq.reports.drain_run import drain_cli, fill_backlog, prepare
from boundq.server.stats import compute_stats

WAITING = 1_000


def make_history(base: str, size: int) -> str:
    url = prepare(base, "boundq", size, name=f"boundq_stats_{size}")
    result = drain_cli(url, {"NUM_WORKERS": "3", "MAX_CONCURRENT_JOBS": "500"})
    print(f"  history of {result['finished']:,} finished jobs "
          f"({result['jobs_per_s']:,.0f} jobs/s)", flush=True)
    fill_backlog(url, WAITING)
    # Autovacuum would run now on the drained table, in the middle of the samples of one
    # history only (the first measurement here: 1.97x, all of it vacuum beside the calls).
    with dbwatch.connect(url) as conn:
        conn.execute("VACUUM ANALYZE")
    return url


async def sample(urls: dict[int, str], samples: int) -> dict[int, list[float]]:
    conns = {size: await psycopg.AsyncConnection.connect(url, autocommit=True)
             for size, url in urls.items()}
    try:
        timings: dict[int, list[float]] = {size: [] for size in urls}
        for conn in conns.values():  # warm: prepared plans and cached pages
            for _ in range(5):
                await compute_stats(conn)
        for _ in range(samples):
            for size, conn in conns.items():
                started = time.perf_counter()
                await compute_stats(conn)
                timings[size].append((time.perf_counter() - started) * 1000)
        return timings
    finally:
        for conn in conns.values():
            await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boundq.reports.stats_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,310000", help="finished jobs per history")
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    if len(sizes) < 1 or min(sizes) < 1 or args.samples < 1:
        parser.error("--sizes needs positive numbers and --samples at least 1")
    base = resolve_database_url(load_settings().database_url)
    urls = {size: make_history(base, size) for size in sizes}
    timings = asyncio.run(sample(urls, args.samples))
    smallest = statistics.median(timings[sizes[0]])
    for size in sizes:
        values = sorted(timings[size])
        median = statistics.median(values)
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"  /stats with {size:>10,} finished: median {median:6.2f} ms  p90 {p90:6.2f} ms"
              f"  ({median / smallest:.2f} x the {sizes[0]:,} history)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
