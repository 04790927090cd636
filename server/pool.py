"""The API's connections: a psycopg pool with a bounded wait, replaced after an outage."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from boundq.core.config import Settings
from boundq.core.db import open_pool

Conn = psycopg.AsyncConnection[Any]
Pool = AsyncConnectionPool[Conn]


class ApiPool:
    def __init__(self, settings: Settings, url: str, size: int, wait_s: float,
                 max_waiting: int) -> None:
        self.settings = settings
        self.url = url
        self.size = size
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self._pool: Pool | None = None

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "API not started"
        return self._pool

    async def _new(self) -> Pool:
        pool = await open_pool(self.url, self.settings, "api", max_size=self.size, wait=False)
        pool.max_waiting = self.max_waiting
        return pool

    async def open(self) -> None:
        self._pool = await self._new()

    async def replace(self) -> None:
        """After an outage: a fresh pool, because psycopg_pool's reconnect backoff doubles
        without a cap and would keep a recovered database waiting for minutes."""
        old = self._pool
        if old is not None:  # requests that still reach it get PoolClosed: a 503
            with contextlib.suppress(Exception):
                await old.close(timeout=2)
        self._pool = await self._new()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """A pooled connection within the wait bound (PoolTimeout -> 503)."""
        async with self.pool.connection(timeout=self.wait_s) as conn:
            yield conn

    def stats(self) -> dict[str, int]:
        return dict(self._pool.get_stats()) if self._pool is not None else {}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=5)
