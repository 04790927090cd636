"""The dashboard's read model: what each page shows, read through the named blocks of
core/sql/ui.sql and core/sql/stats.sql, at a cost that does not grow with history.

Finished work (per queue totals, per minute throughput and pickup) comes from the
tallies; active work from the partial indexes, counted no further than a cap; kinds from
three bounded windows (running rows, the next jobs of each queue, the last minute's
finished rows). Every function takes the caller's scope (`queues`: None for every
queue) and returns only what it may see.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import IsolationLevel
from psycopg.rows import dict_row

from boundq.core import queue
from boundq.core.errors import JobNotFound
from boundq.core.queries import Q
from boundq.server.pool import Conn
from boundq.server.stats import quantile

COUNT_CAP = 10_000  # active rows per queue and state are counted no further (shown "10,000+")
KIND_NEXT_WINDOW = 1_000  # kinds waiting: among the next jobs of each queue, in claim order
KIND_FINISHED_WINDOW = 5_000  # kinds finished: among the last minute's newest
CHART_MINUTES = 60
RATE_WINDOW_S = 60  # per queue throughput and pickup: the last minute (second tallies)
PAGE_SIZE = 50
FAILED_SCAN_MAX = 5_000  # a scoped or filtered failed page reads at most this many entries
RUNNING_SHOWN = 200

Scope = list[str] | None


@dataclass(frozen=True, slots=True)
class Count:
    n: int
    capped: bool = False


@dataclass(frozen=True, slots=True)
class QueueLimits:
    concurrency: int | None
    rate_per_s: float | None
    burst: int | None
    weight: int | None
    paused: bool


@dataclass(slots=True)
class QueueRow:
    name: str
    new: Count = Count(0)
    scheduled: Count = Count(0)
    blocked: Count = Count(0)
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    finished_last_minute: int = 0
    pickup_hist: list[int] = field(default_factory=list)
    limits: QueueLimits | None = None

    @property
    def per_s(self) -> float:
        return self.finished_last_minute / RATE_WINDOW_S

    @property
    def pickup_p50_s(self) -> float | None:
        return quantile(self.pickup_hist, 0.5)

    @property
    def pickup_p99_s(self) -> float | None:
        return quantile(self.pickup_hist, 0.99)


@dataclass(frozen=True, slots=True)
class KindRow:
    kind: str
    running: int
    next_up: Count
    succeeded_last_minute: int
    failed_last_minute: int
    last_minute_capped: bool


@dataclass(frozen=True, slots=True)
class Minute:
    at: datetime  # the minute's start, UTC
    succeeded: int
    failed: int
    claimed: int
    pickup_p50_s: float | None
    pickup_p99_s: float | None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed


@dataclass(slots=True)
class Overview:
    now: datetime
    queues: list[QueueRow]
    total: QueueRow
    kinds: list[KindRow]
    minutes: list[Minute]


@contextlib.asynccontextmanager
async def reading(conn: Conn) -> AsyncIterator[Conn]:
    """One read-only REPEATABLE READ transaction for a page's reads, so that its figures
    come from one snapshot (a job is never counted running in one table and waiting in
    the next), with the bounded plan shapes of session_plans_bounded_set. The pooled
    connection gets its own settings back afterwards."""
    await conn.set_isolation_level(IsolationLevel.REPEATABLE_READ)
    await conn.set_read_only(True)
    try:
        async with conn.transaction():
            await conn.execute(Q.session_plans_bounded_set)
            yield conn
    finally:
        await conn.set_isolation_level(None)
        await conn.set_read_only(None)


def _add(a: list[int], b: list[int] | None) -> list[int]:
    b = list(b or [])
    width = max(len(a), len(b))
    return [x + y for x, y in zip(a + [0] * (width - len(a)), b + [0] * (width - len(b)),
                                  strict=True)]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


async def _all(conn: Conn, query: Any, params: dict[str, Any] | None = None
               ) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, params)
    return await cur.fetchall()


async def db_now(conn: Conn) -> datetime:
    rows = await _all(conn, Q.db_now_get)
    return _utc(rows[0]["now"])


async def queue_limits(conn: Conn, scope: Scope) -> dict[str, QueueLimits]:
    """Flow control's settings of the scope's queues that have any (job_queues)."""
    return {r["name"]: QueueLimits(r["concurrency"], r["rate_per_s"], r["burst"], r["weight"],
                                   bool(r["paused"]))
            for r in await _all(conn, Q.job_queues_list, {"queues": scope})}


async def queue_rows(conn: Conn, scope: Scope) -> list[QueueRow]:
    """Every queue the scope sees that holds or held anything (or has settings), by name."""
    rows: dict[str, QueueRow] = {}

    def row(name: str) -> QueueRow:
        return rows.setdefault(name, QueueRow(name))

    def visible(name: str) -> bool:
        return scope is None or name in scope

    for r in await _all(conn, Q.job_count_by_queue_capped, {"cap": COUNT_CAP, "queues": scope}):
        found = row(r["queue"])
        count = Count(int(r["n"]), bool(r["capped"]))
        if r["status"] == "processing":
            found.running = count.n
        else:
            setattr(found, r["status"], count)
    for r in await _all(conn, Q.job_tally_totals):
        if visible(r["queue"]) and (r["success"] or r["failed"] or r["cancelled"]):
            found = row(r["queue"])
            found.succeeded, found.failed = int(r["success"]), int(r["failed"])
            found.cancelled = int(r["cancelled"])
    for r in await _all(conn, Q.job_tally_recent, {"window_s": RATE_WINDOW_S}):
        if visible(r["queue"]) and (r["succeeded"] or r["dead"] or r["claimed"]):
            found = row(r["queue"])
            found.finished_last_minute = int(r["succeeded"]) + int(r["dead"])
            found.pickup_hist = _add(found.pickup_hist, r["pickup_hist"])
    for name, setting in (await queue_limits(conn, scope)).items():
        row(name).limits = setting
    return sorted(rows.values(), key=lambda q: q.name)


def total_of(queues: list[QueueRow]) -> QueueRow:
    total = QueueRow("all queues")
    for q in queues:
        for name in ("new", "scheduled", "blocked"):
            mine, theirs = getattr(total, name), getattr(q, name)
            setattr(total, name, Count(mine.n + theirs.n, mine.capped or theirs.capped))
        total.running += q.running
        total.succeeded += q.succeeded
        total.failed += q.failed
        total.cancelled += q.cancelled
        total.finished_last_minute += q.finished_last_minute
        total.pickup_hist = _add(total.pickup_hist, q.pickup_hist)
    return total


async def kind_rows(conn: Conn, scope: Scope) -> list[KindRow]:
    return [KindRow(r["kind"], int(r["running"]), Count(int(r["next_up"]), r["next_up_capped"]),
                    int(r["succeeded_last_minute"]), int(r["failed_last_minute"]),
                    bool(r["last_minute_capped"]))
            for r in await _all(conn, Q.job_count_by_kind_capped,
                                {"next_cap": KIND_NEXT_WINDOW,
                                 "finished_cap": KIND_FINISHED_WINDOW, "queues": scope})]


async def minutes(conn: Conn, scope: Scope, now: datetime) -> list[Minute]:
    """The last CHART_MINUTES minutes, the current one last, each summed over the scope's
    queues (a minute without events is all zero)."""
    last = now.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=CHART_MINUTES - 1)
    sums: dict[datetime, tuple[int, int, int, list[int]]] = {}
    window_s = CHART_MINUTES * 60
    for r in await _all(conn, Q.job_tally_minutes, {"window_s": window_s}):
        at = _utc(r["minute"])
        if at < first or (scope is not None and r["queue"] not in scope):
            continue
        ok, dead, claimed, hist = sums.get(at, (0, 0, 0, []))
        sums[at] = (ok + int(r["succeeded"]), dead + int(r["dead"]),
                    claimed + int(r["claimed"]), _add(hist, r["pickup_hist"]))
    out = []
    for i in range(CHART_MINUTES):
        at = first + timedelta(minutes=i)
        ok, dead, claimed, hist = sums.get(at, (0, 0, 0, []))
        out.append(Minute(at, ok, dead, claimed, quantile(hist, 0.5), quantile(hist, 0.99)))
    return out


async def overview(conn: Conn, scope: Scope) -> Overview:
    now = await db_now(conn)
    queues = await queue_rows(conn, scope)
    return Overview(now, queues, total_of(queues), await kind_rows(conn, scope),
                    await minutes(conn, scope, now))


# --- lists ----------------------------------------------------------------------------
@dataclass(slots=True)
class FailedPage:
    jobs: list[dict[str, Any]]
    next_cursor: int | None


async def failed_page(conn: Conn, scope: Scope, before_id: int | None,
                      limit: int = PAGE_SIZE) -> FailedPage:
    """Dead letters newest first. Unscoped, a page is the next `limit` of them; scoped, it
    reads at most FAILED_SCAN_MAX entries and may come back short, with a cursor below
    what it read."""
    scan = limit + 1 if scope is None else FAILED_SCAN_MAX
    jobs = await _all(conn, Q.job_list_failed, {"queues": scope, "before_id": before_id,
                                                "scan": scan, "limit": limit + 1})
    if len(jobs) > limit:
        return FailedPage(jobs[:limit], jobs[limit - 1]["id"])
    if scope is None:
        return FailedPage(jobs, None)
    cur = await conn.execute(Q.job_list_failed_scan_floor, {"before_id": before_id,
                                                            "scan": scan})
    floor = await cur.fetchone()
    more = floor is not None and floor[0] is not None and int(floor[1]) >= scan
    return FailedPage(jobs, int(floor[0]) if more and floor is not None else None)


async def running_jobs(conn: Conn, scope: Scope) -> list[dict[str, Any]]:
    return await _all(conn, Q.job_list_running, {"queues": scope, "limit": RUNNING_SHOWN})


async def next_in_queue(conn: Conn, name: str, limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
    return await _all(conn, Q.job_list_next_in_queue, {"queue": name, "limit": limit})


async def job_detail(conn: Conn, scope: Scope, job_id: int
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The job and its attempts (the running one last); None when it does not exist or
    lies outside the scope (the two are not told apart)."""
    try:
        job = await queue.get_job(conn, job_id)
    except JobNotFound:
        return None
    if scope is not None and job["queue"] not in scope:
        return None
    return job, await queue.job_attempts(conn, job_id)
