"""Ingress backpressure: database health and queue depth, checked without a query per request.

One background task keeps two facts fresh (every `depth_refresh_s`, 1 s by default):
- the number of waiting jobs (status `new`) of each queue (server/depth.py), each
  counted no further than MAX_QUEUE_DEPTH + 1, plus the jobs this process created in it
  since (so a burst cannot overshoot by much); while every queue is below half the limit
  the count is redone only every 5th refresh. A create that would be refused on its
  queue's figure is refused only after a fresh count of that queue agrees;
- whether the database is reachable with a current schema.

A request that meets a broken connection marks the database down; from then on creates
and reads answer 503 at once (no hang on the pool) until the probe, a fresh connection
outside the pool, succeeds. Then the pool is replaced and requests flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from boundq.core.db import Connection, conninfo
from boundq.core.migrate import LATEST_VERSION
from boundq.core.queries import Q
from boundq.server.depth import QueueDepths
from boundq.server.errors import ApiError, unavailable
from boundq.server.metrics import ApiMetrics
from boundq.server.options import ApiOptions
from boundq.server.pool import ApiPool

log = logging.getLogger("boundq.api")

PROBE_CONNECT_TIMEOUT_S = 2
FAR_FROM_LIMIT_FACTOR = 5  # every queue below half of MAX_QUEUE_DEPTH: count every 5th refresh
RECOUNT_MIN_S = 0.05  # a refusal is confirmed by a count at most this old
CONFIRMED_FOR_REFRESHES = 2  # a full count stands this many refresh intervals
_BUSY = (PoolTimeout, TooManyRequests)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def queue_full(queue: str, waiting: int, limit: int, retry_after_s: int) -> ApiError:
    return ApiError(429, "queue_full", f"queue {queue!r} is full: {waiting} jobs are "
                    f"waiting (MAX_QUEUE_DEPTH={limit}, per queue); retry later", "queue",
                    headers={"Retry-After": str(retry_after_s)})


class DbMonitor:
    def __init__(self, pool: ApiPool, max_queue_depth: int, options: ApiOptions,
                 metrics: ApiMetrics) -> None:
        self.pool = pool
        self.max_queue_depth = max_queue_depth
        self.options = options
        self.metrics = metrics
        self.up = True
        self.error = ""
        self.schema_version = LATEST_VERSION
        self.depths = QueueDepths(max_queue_depth)
        self.refreshed_at = 0.0
        self._wake = asyncio.Event()
        self._recount_lock = asyncio.Lock()  # one confirming count at a time

    # --- used by requests ---------------------------------------------------------------
    def mark_down(self, exc: BaseException) -> None:
        if isinstance(exc, PoolClosed | PoolTimeout | TooManyRequests):
            return  # a replaced pool or a busy one: the database itself may be fine
        if self.up:
            log.warning("database unavailable: %s", _one_line(exc))
        self.up = False
        self.error = _one_line(exc)
        self._wake.set()

    def check_available(self) -> None:
        if not self.up:
            self.metrics.db_unavailable += 1
            raise unavailable("the database is unreachable; retry shortly",
                              self.options.retry_after_s, "database_unavailable")

    @property
    def waiting(self) -> int:
        """Waiting jobs of every queue together, as last counted plus our creates since."""
        return self.depths.total

    async def admit(self, queue: str) -> None:
        """A create into `queue` may go ahead: the database is up and that queue is not
        full (other queues' backlogs do not count)."""
        self.check_available()
        await self.confirm(queue)
        self.check_available()
        self.refuse_if_full(queue)

    async def confirm(self, queue: str) -> None:
        """The queue's figure reached the limit: recount it (at most one count per queue
        every RECOUNT_MIN_S) before it refuses anything. The figure is the last count plus
        this process's creates since; jobs the workers took are not subtracted, so under a
        steady flow the workers keep up with it crossed the limit with nothing waiting
        (false 429s)."""
        depths = self.depths
        if self.confirmed_full(queue):
            return  # a recent real count reached the limit: refuse on it, no query
        if depths.full(queue) and depths.count_age(queue) >= RECOUNT_MIN_S:
            async with self._recount_lock:
                if depths.count_age(queue) >= RECOUNT_MIN_S:
                    await self.recount(queue)

    async def confirm_full_queues(self) -> None:
        """Before a bulk upload, whose items' queues are known only as they are validated:
        confirm every queue that looks full, so the items are judged on fresh counts."""
        for queue in self.depths.full_queues():
            await self.confirm(queue)
        self.check_available()

    def confirmed_full(self, queue: str) -> bool:
        """A real count of the queue reached the limit within the last two refreshes (the
        monitor counts every refresh, and the count itself takes time under load): a
        flood into a full queue is refused without a query, at the door or the route."""
        return self.depths.confirmed_full(queue, CONFIRMED_FOR_REFRESHES
                                          * self.options.depth_refresh_s)

    def refuse_if_full(self, queue: str) -> None:
        """No query: the last real count (made fresh by `confirm` when the queue looked
        full). Creates that commit within RECOUNT_MIN_S of a count may pass it by that
        many: the overshoot is bounded by what one process creates in 50 ms."""
        if self.depths.counted_full(queue):
            self.metrics.queue_full += 1
            raise queue_full(queue, self.depths.of(queue), self.max_queue_depth,
                             self.options.retry_after_s)

    def note_created(self, queue: str, n: int) -> None:
        self.depths.add(queue, n)

    @property
    def schema_current(self) -> bool:
        return self.schema_version == LATEST_VERSION

    # --- the background task ------------------------------------------------------------
    def _count_due(self) -> bool:
        """Counting a deep backlog costs the database a scan: far below the limit, a count
        every few refreshes is enough (our own creates are added as they happen)."""
        options = self.options
        far = self.depths.deepest < self.max_queue_depth // 2
        every = options.depth_refresh_s * (FAR_FROM_LIMIT_FACTOR if far else 1)
        return time.monotonic() - self.depths.counted_at >= every * 0.95

    async def refresh_once(self, force_count: bool = True) -> None:
        """Refresh the schema version and (when due) every queue's waiting count, through
        the pool."""
        count = force_count or self._count_due()
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q.migration_version_get)
                version = await cur.fetchone()
                if count:
                    cur = await conn.execute(Q.job_count_waiting_by_queue_capped,
                                             {"cap": self.max_queue_depth + 1})
                    self.depths.replace({str(q): int(n) for q, n in await cur.fetchall()})
        except _BUSY:
            return  # busy is not down; keep the last values
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.mark_down(exc)
            return
        except psycopg.Error as exc:  # e.g. the schema is gone (rolled back)
            self.schema_version = -1
            self.error = _one_line(exc)
            return
        self.schema_version = int(version[0]) if version else 0
        self.refreshed_at = time.monotonic()

    async def recount(self, queue: str) -> None:
        """One queue's waiting count, to confirm a refusal."""
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q.job_count_waiting_in_queue_capped,
                                         {"queue": queue, "cap": self.max_queue_depth + 1})
                row = await cur.fetchone()
        except _BUSY:
            return
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.mark_down(exc)
            return
        self.depths.recounted(queue, int(row[0]) if row else 0)

    async def probe(self) -> bool:
        """A fresh connection outside the pool: is the database back?"""
        try:
            async with await Connection.connect(
                conninfo(self.pool.url, "api-probe", connect_timeout=PROBE_CONNECT_TIMEOUT_S),
                autocommit=True,
            ) as conn:
                await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, OSError) as exc:
            self.error = _one_line(exc)
            return False

    async def recover(self) -> None:
        await self.pool.replace()
        self.up = True
        await self.refresh_once()
        if self.up:
            log.info("database reachable again; API requests resume")

    async def run(self, stop: asyncio.Event) -> None:
        options = self.options
        while not stop.is_set():
            interval = options.depth_refresh_s if self.up else options.probe_interval_s
            try:
                if self.up:
                    await self.refresh_once(force_count=False)
                elif await self.probe():
                    await self.recover()
            except Exception:  # a bug here must not end the monitor
                log.exception("API monitor: unexpected error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
