"""`GET /stats`: what the queue holds and how fast it moves, at a cost that does not grow
with history. Finished work comes from the tallies the moving statements keep; waiting
work from the partial indexes, counted no further than STATS_COUNT_CAP."""

from __future__ import annotations

from typing import Any

from boundq.core.queries import Q
from boundq.server.pool import Conn

STATS_COUNT_CAP = 100_000
RATE_WINDOW_S = 10  # throughput_per_s: jobs finished over the last 10 whole seconds
# Upper bounds of the pickup histogram's buckets, as job_complete_and_claim fills them.
PICKUP_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                 float("inf"))


def quantile(hist: list[int] | None, q: float) -> float | None:
    """The upper bound of the bucket that holds the q-quantile (None: no claims)."""
    counts = list(hist or [])
    total = sum(counts)
    if not total:
        return None
    seen = 0
    for bound, count in zip(PICKUP_BOUNDS, counts, strict=False):
        seen += count
        if seen >= q * total:
            return bound
    return PICKUP_BOUNDS[-1]


async def compute_stats(conn: Conn, queues: list[str] | None = None) -> dict[str, Any]:
    """Every queue, or (`queues`) those only: a token of API_TOKENS sees its own."""
    if queues is None:
        cur = await conn.execute(Q.job_count_active_capped, {"cap": STATS_COUNT_CAP})
    else:
        cur = await conn.execute(Q.job_count_active_in_queues_capped,
                                 {"cap": STATS_COUNT_CAP, "queues": queues})
    active = await cur.fetchone()
    assert active is not None
    counts: dict[str, int] = dict(zip(("new", "scheduled", "blocked", "processing"),
                                      map(int, active), strict=True))
    finished = {"success": 0, "failed": 0, "cancelled": 0}
    cur = await conn.execute(Q.job_tally_totals)
    for queue, success, failed, cancelled in await cur.fetchall():
        if queues is not None and queue not in queues:
            continue
        finished["success"] += int(success)
        finished["failed"] += int(failed)
        finished["cancelled"] += int(cancelled)
    counts.update(finished)
    last_minute = await _recent(conn, 60, queues)
    last_seconds = await _recent(conn, RATE_WINDOW_S, queues)
    if queues is None:
        cur = await conn.execute(Q.job_oldest_waiting)
    else:
        cur = await conn.execute(Q.job_oldest_waiting_in_queues, {"queues": queues})
    oldest = await cur.fetchone()
    return {
        "counts": {k: counts[k] for k in ("scheduled", "blocked", "new", "processing",
                                          "success", "failed", "cancelled")},
        "counts_capped_at": STATS_COUNT_CAP,
        "waiting": counts["new"],
        "oldest_waiting_age_s": oldest[0] if oldest else None,
        "in_flight": counts["processing"],
        "finished_last_minute": last_minute["finished"],
        "throughput_per_s": round(last_seconds["finished"] / RATE_WINDOW_S, 3),
        "pickup_p50_s": quantile(last_minute["hist"], 0.5),
        "pickup_p99_s": quantile(last_minute["hist"], 0.99),
    }


async def _recent(conn: Conn, window_s: int, queues: list[str] | None) -> dict[str, Any]:
    cur = await conn.execute(Q.job_tally_recent, {"window_s": window_s})
    finished = 0
    hist: list[int] = []
    for row in await cur.fetchall():
        queue, succeeded, dead, _, _, _, pickup_hist = row
        if queues is not None and queue not in queues:
            continue
        finished += int(succeeded) + int(dead)
        counts = list(pickup_hist or [])
        hist = [a + b for a, b in zip(hist + [0] * (len(counts) - len(hist)),
                                      counts + [0] * (len(hist) - len(counts)), strict=True)]
    return {"finished": finished, "hist": hist}
