"""What the routes share, built once per app: the pool, the read router (with a replica's
pool when REPLICA_DATABASE_URL is set), the database monitor, the group commit batcher,
the lag probe, the authorizer and the counters. Each part gets only the parts it needs
(none of them knows this container), and the container starts and stops them in order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from boundq.core.config import Settings
from boundq.core.handlers import Registry, default_registry
from boundq.server.admission import LagProbe
from boundq.server.auth import Authorizer
from boundq.server.backpressure import DbMonitor
from boundq.server.batcher import CreateBatcher
from boundq.server.events import EventHub
from boundq.server.metrics import ApiExporter, ApiMetrics
from boundq.server.options import ApiOptions
from boundq.server.pool import ApiPool
from boundq.server.replica import ReadRouter
from boundq.server.waits import WaitRoom

__all__ = ["ApiOptions", "ApiState"]

METRICS_FLUSH_S = 1.0  # as the workers do: a scrape elsewhere (METRICS_PORT) sees this old


class ApiState:
    def __init__(self, settings: Settings, url: str, options: ApiOptions | None = None,
                 registry: Registry | None = None) -> None:
        self.settings = settings
        self.options = options or ApiOptions()
        self.registry = registry or default_registry
        self.metrics = ApiMetrics()
        self.exporter = ApiExporter(self.metrics)
        o = self.options
        size = o.pool_size or max(2, settings.api_pool_buffer)
        self.pool = ApiPool(settings, url, size, o.pool_wait_s, o.pool_max_waiting)
        replica = (ApiPool(settings, settings.replica_database_url, size, o.pool_wait_s,
                           o.pool_max_waiting) if settings.replica_database_url else None)
        self.reads = ReadRouter(self.pool, replica, settings.replica_max_lag_seconds)
        self.monitor = DbMonitor(self.pool, settings.max_queue_depth, o, self.metrics)
        self.batcher = CreateBatcher(self.pool, o, self.metrics)
        self.lag = LagProbe()
        self.auth = Authorizer(settings, o.protect_reads)
        self.waits = WaitRoom(self.pool.connection, o.waits, o.retry_after_s)
        self.events = EventHub(self.pool.connection, url, o.events, self.metrics,
                               o.retry_after_s)
        # /stats per scope (frozenset of queues; None = every queue): (monotonic, stats)
        self.stats_cache: dict[frozenset[str] | None, tuple[float, dict[str, Any]]] = {}
        self.stats_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self.pool.connection()

    async def start(self) -> None:
        await self.pool.open()
        await self.monitor.refresh_once()
        await self.reads.open()
        self._tasks = [asyncio.create_task(self.monitor.run(self._stop), name="boundq-api-monitor"),
                       asyncio.create_task(self.lag.run(self._stop), name="boundq-api-lag"),
                       asyncio.create_task(self._flush_metrics_every(METRICS_FLUSH_S),
                                           name="boundq-api-metrics")]
        if self.reads.configured:
            self._tasks.append(asyncio.create_task(self.reads.run(self._stop),
                                                   name="boundq-api-replica"))

    async def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        await self.waits.close()
        await self.events.close()
        await self.batcher.drain(timeout_s=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.reads.close()
        await self.pool.close()

    def flush_metrics(self) -> None:
        """The API's counts into prometheus-client: before each scrape of its `/metrics`,
        and once a second for a scrape of every process elsewhere (`boundq serve` with
        METRICS_PORT, served by the parent)."""
        self.exporter.flush(self.monitor.up, self.monitor.waiting, self.pool.stats(),
                            self.lag.lag_s, len(self.events.clients))
        self.reads.export()

    async def _flush_metrics_every(self, interval_s: float) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval_s)
            self.flush_metrics()

    def cached_stats(self, queues: frozenset[str] | None) -> dict[str, Any] | None:
        cached = self.stats_cache.get(queues)
        if cached is None or time.monotonic() - cached[0] > self.options.stats_cache_s:
            return None
        return cached[1]
