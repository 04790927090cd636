"""What a claim costs with flow control: one claim of --batch jobs through the cycle's
statement (job_complete_and_claim, nothing to finish) against boundq_claim_limited, with
no settings, with a rate limit on an unrelated kind, and with a generous concurrency limit
on the claimed queue. Timed on the client around the statement (one round trip and its
durable commit), in rounds on one connection whose order rotates; each claim's jobs are
then finished (untimed) so that no variant counts more running rows than another.

    python -m boundq.reports.claim_cost --batch 100 --rounds 60
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, LiteralString

import psycopg

from boundq.core import dbadmin, queue
from boundq.core.config import load_settings
from boundq.core.migrate import migrate
from boundq.core.pgembed import resolve_database_url
from boundq.reports.drain_run import fill_backlog

COST_DB = "boundq_claim_cost"
Conn = psycopg.AsyncConnection[Any]
Claim = Callable[[Conn, int], Awaitable[list[Any]]]


async def _fast(conn: Conn, n: int) -> list[Any]:
    return await queue.claim(conn, "cost", n, 30.0)


async def _limited(conn: Conn, n: int) -> list[Any]:
    return await queue.claim_limited(conn, "cost", "default", n, 30.0, oldest=n // 10)


VARIANTS: dict[str, tuple[str, Claim]] = {
    "fast": ("job_complete_and_claim (no settings)", _fast),
    "limited": ("boundq_claim_limited, no settings", _limited),
    "limited+kind": ("boundq_claim_limited, an unrelated kind rate-limited", _limited),
    "limited+generous": ("boundq_claim_limited, queue concurrency 100000", _limited),
}
SETTINGS: dict[str, LiteralString] = {
    "fast": "DELETE FROM job_kinds; DELETE FROM job_queues",
    "limited": "DELETE FROM job_kinds; DELETE FROM job_queues",
    "limited+kind": "DELETE FROM job_queues; INSERT INTO job_kinds (name, rate_per_s, burst, "
                    "tokens) VALUES ('unrelated', 1000, 1000, 1000) ON CONFLICT DO NOTHING",
    "limited+generous": "DELETE FROM job_kinds; INSERT INTO job_queues (name, concurrency) "
                        "VALUES ('default', 100000) ON CONFLICT DO NOTHING",
}


async def measure(url: str, batch: int, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        names = list(VARIANTS)
        for i in range(rounds):
            # rotated each round: the first claim after a round walks past the index
            # entries the previous claims left dead (and marks them), so no variant may
            # always go first
            for variant in names[i % len(names):] + names[:i % len(names)]:
                claim = VARIANTS[variant][1]
                await conn.execute(SETTINGS[variant])  # literal text: no parameters
                started = time.perf_counter()
                rows = await claim(conn, batch)
                times[variant].append((time.perf_counter() - started) * 1e6)
                if len(rows) != batch:
                    raise RuntimeError(f"{variant}: claimed {len(rows)} of {batch}")
                await queue.complete_batch(conn, "cost", [(r[0], r[1]) for r in rows])
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m boundq.reports.claim_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=60)
    args = p.parse_args(argv)
    base = resolve_database_url(load_settings().database_url)
    url = dbadmin.fresh_database(base, COST_DB)
    asyncio.run(migrate(url))
    fill_backlog(url, args.batch * args.rounds * len(VARIANTS) + args.batch)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    times = asyncio.run(measure(url, args.batch, args.rounds))
    base_median = statistics.median(times["fast"])
    print(f"one claim of {args.batch} jobs, {args.rounds} alternating rounds (µs, client "
          "round trip)")
    for variant, (label, _) in VARIANTS.items():
        med = statistics.median(times[variant])
        q = statistics.quantiles(times[variant], n=10)
        print(f"  {label:<55} median {med:>8,.0f}  p10 {q[0]:>8,.0f}  p90 {q[-1]:>8,.0f}  "
              f"{med / base_median:5.2f}x  ({med / args.batch:,.1f} µs/job)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
