"""Ingress backpressure: database health and queue depth, checked without a query per request.

One background task keeps two facts fresh (every `depth_refresh_s`, 1 s by default):
- the number of waiting jobs (status `new`), counted no further than MAX_QUEUE_DEPTH + 1,
  plus the jobs this process created since (so a burst cannot overshoot by much); while
  the count is below half the limit it is redone only every 5th refresh. A create that
  would be refused on that figure is refused only after a fresh count agrees;
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
from boundq.server.errors import ApiError, unavailable
from boundq.server.metrics import ApiMetrics
from boundq.server.options import ApiOptions
from boundq.server.pool import ApiPool

log = logging.getLogger("boundq.api")

PROBE_CONNECT_TIMEOUT_S = 2
FAR_FROM_LIMIT_FACTOR = 5  # below half of MAX_QUEUE_DEPTH: count every 5th refresh
RECOUNT_MIN_S = 0.05  # a refusal is confirmed by a count at most this old
_BUSY = (PoolTimeout, TooManyRequests)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


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
        self.waiting = 0
        self.counted_waiting = 0  # the last real count (waiting adds our creates since)
        self.refreshed_at = 0.0
        self.counted_at = 0.0
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

    async def admit(self, n: int = 1) -> None:
        """A create of n jobs may go ahead: the database is up and the queue not full."""
        self.check_available()
        limit = self.max_queue_depth
        if self.waiting >= limit and time.monotonic() - self.counted_at >= RECOUNT_MIN_S:
            # The figure is the last count plus this process's creates since; jobs the
            # workers took are not subtracted, so between counts it only grows. Under a
            # steady flow the workers keep up with, it crossed the limit with nothing
            # waiting (false 429s). Confirm with a count before refusing.
            async with self._recount_lock:
                if time.monotonic() - self.counted_at >= RECOUNT_MIN_S:
                    await self.refresh_once(force_count=True)
            self.check_available()
        if self.waiting >= limit:
            self.metrics.queue_full += 1
            raise ApiError(429, "queue_full",
                           f"{self.waiting} jobs are waiting (MAX_QUEUE_DEPTH={limit}); retry "
                           "later", headers={"Retry-After": str(self.options.retry_after_s)})

    def note_created(self, n: int) -> None:
        self.waiting += n

    def confirmed_full(self) -> bool:
        """A recent real count reached the limit: refuse without counting again."""
        return (self.counted_waiting >= self.max_queue_depth
                and time.monotonic() - self.counted_at < self.options.depth_refresh_s)

    @property
    def schema_current(self) -> bool:
        return self.schema_version == LATEST_VERSION

    # --- the background task ------------------------------------------------------------
    def _count_due(self) -> bool:
        """Counting a deep backlog costs the database a scan: far below the limit, a count
        every few refreshes is enough (our own creates are added as they happen)."""
        options = self.options
        far = self.waiting < self.max_queue_depth // 2
        every = options.depth_refresh_s * (FAR_FROM_LIMIT_FACTOR if far else 1)
        return time.monotonic() - self.counted_at >= every * 0.95

    async def refresh_once(self, force_count: bool = True) -> None:
        """Refresh the schema version and (when due) the waiting count, through the pool."""
        cap = self.max_queue_depth + 1
        count = force_count or self._count_due()
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(Q.migration_version_get)
                version = await cur.fetchone()
                if count:
                    cur = await conn.execute(Q.job_count_waiting_capped, {"cap": cap})
                    row = await cur.fetchone()
                    self.waiting = self.counted_waiting = int(row[0]) if row else 0
                    self.counted_at = time.monotonic()
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
