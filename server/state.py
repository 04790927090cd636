"""What the routes share: settings, the API pool, the monitor, the group-commit batcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from boundq.core.config import Settings
from boundq.core.db import open_pool
from boundq.core.handlers import Registry, default_registry
from boundq.core.metrics import Metrics
from boundq.server.backpressure import DbMonitor
from boundq.server.batcher import CreateBatcher
from boundq.server.metrics import ApiMetrics

Conn = psycopg.AsyncConnection[Any]
Pool = AsyncConnectionPool[Conn]


@dataclass(frozen=True, slots=True)
class ApiOptions:
    """Limits of the HTTP layer. The defaults suit `boundq serve`; tests shrink them."""

    pool_size: int | None = None  # None: API_POOL_BUFFER (at least 2)
    pool_wait_s: float = 1.0  # a request waits this long for a connection, then 503
    pool_max_waiting: int = 1024  # more requests than this queued for a connection: 503 now
    body_timeout_s: float = 10.0  # a single create's body must arrive within this
    bulk_body_timeout_s: float = 60.0
    depth_refresh_s: float = 1.0  # how stale the cached waiting count (and readiness) may be
    probe_interval_s: float = 0.5  # while the database is down: how often to try it
    stats_cache_s: float = 1.0
    max_multipart_parts: int = 8
    group_commit: bool = True  # concurrent single creates share one INSERT statement
    group_flushers: int | None = None  # statements in flight at once; None: 2 (see batcher)
    group_max_batch: int = 256
    group_max_pending: int = 10_000
    protect_reads: bool = False  # with API_TOKEN: also require it on GET endpoints
    page_max: int = 500
    retry_after_s: int = 1


class ApiState:
    def __init__(self, settings: Settings, url: str, options: ApiOptions | None = None,
                 core_metrics: Metrics | None = None, registry: Registry | None = None) -> None:
        self.settings = settings
        self.url = url
        self.options = options or ApiOptions()
        self.registry = registry or default_registry
        self.core_metrics = core_metrics or Metrics()
        self.api_metrics = ApiMetrics()
        self.pool_size = self.options.pool_size or max(2, settings.api_pool_buffer)
        self._pool: Pool | None = None
        self._stop = asyncio.Event()
        self._monitor_task: asyncio.Task[None] | None = None
        self.monitor = DbMonitor(self)
        self.batcher = CreateBatcher(self)
        self.stats_cache: tuple[float, dict[str, Any]] | None = None
        self.stats_lock = asyncio.Lock()

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "API not started"
        return self._pool

    async def new_pool(self) -> Pool:
        pool = await open_pool(self.url, self.settings, "api", max_size=self.pool_size,
                               wait=False)
        pool.max_waiting = self.options.pool_max_waiting
        return pool

    async def replace_pool(self) -> None:
        """After an outage: a fresh pool, because psycopg_pool's reconnect backoff doubles
        without a cap and would keep a recovered database waiting for minutes."""
        old = self._pool
        if old is not None:  # requests that still reach it get PoolClosed: a 503
            with contextlib.suppress(Exception):
                await old.close(timeout=2)
        self._pool = await self.new_pool()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection within the wait bound (PoolTimeout -> 503)."""
        async with self.pool.connection(timeout=self.options.pool_wait_s) as conn:
            yield conn

    async def start(self) -> None:
        self._pool = await self.new_pool()
        await self.monitor.refresh_once()
        self._monitor_task = asyncio.create_task(self.monitor.run(self._stop),
                                                 name="boundq-api-monitor")

    async def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await self.batcher.drain(timeout_s=5)
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
        if self._pool is not None:
            await self._pool.close(timeout=5)
