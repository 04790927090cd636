"""A worker's connections: one per loop (a lane), opened on demand, dropped on failure.

A pool sat between the loops and the database before: during an outage every loop waited
in the pool's getconn() for its 30 s timeout while the pool retried with a doubling
backoff, so processing resumed up to ~20 s after PostgreSQL was back, and leases could
expire meanwhile. A lane has no queue and no backoff of its own: a loop that needs the
database connects right then (an outage fails fast: connection refused, or the connect
timeout), and after any connection error the lane drops its connection, so the loop's
next round (its own bounded, jittered backoff; core/loops.py) connects afresh.

Each loop of a worker gets its own lane, so no loop waits for another's statement: the
heartbeat never queues behind a claim. When MAX_DB_CONNECTIONS is below what the loops
need, `plan_lanes` lets the maintenance loops share the heartbeat's lane and then trims
the claim loops, with one warning; a lane shared by several loops is used by one at a
time (its lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from boundq.core.config import Settings
from boundq.core.db import Connection, conninfo, open_pool

log = logging.getLogger("boundq.worker")

Conn = psycopg.AsyncConnection[Any]

# What a connection error looks like from the lane's side: the connection is unusable
# (or its state unknown) and is dropped.
_BROKEN = (psycopg.OperationalError, psycopg.InterfaceError, OSError, TimeoutError,
           asyncio.CancelledError)
CLOSE_TIMEOUT_S = 1.0
HANDLER_WAIT_S = 10.0  # a handler waits this long for a connection (then PoolTimeout)


class Lane:
    """One autocommit connection, made on first use and after every failure."""

    def __init__(self, url: str, role: str, connect_timeout_s: float = 3.0) -> None:
        self._conninfo = conninfo(url, role, connect_timeout=max(1, round(connect_timeout_s)))
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    @contextlib.asynccontextmanager
    async def connection(self, deadline_s: float | None = None) -> AsyncIterator[Conn]:
        """The lane's connection for one unit of work, connecting first when needed. A
        connection error (or the deadline passing, or cancellation mid-statement) drops
        the connection and propagates."""
        async with self._lock:
            try:
                async with asyncio.timeout(deadline_s):
                    if self._conn is None or self._conn.closed:
                        # Prepared on first use: with the worker's session settings each
                        # statement's plan is fixed, so it is planned once (core/db.py).
                        self._conn = await Connection.connect(self._conninfo, autocommit=True,
                                                              prepare_threshold=0)
                        self.connects += 1
                    yield self._conn
            except _BROKEN:
                await self._drop()
                raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Closing politely sends a Terminate message: on a black-holed socket that could
        # hang, so it gets a short deadline and is then left to the garbage collector.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await conn.close()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


@dataclass(frozen=True, slots=True)
class LanePlan:
    """How a worker's connection budget is spent: the claim loops' lanes, and whether the
    maintenance loops have a lane of their own or share the heartbeat's. The LISTEN
    connection is one more."""

    cyclers: int
    maintenance_shares_heartbeat: bool

    @property
    def connections(self) -> int:
        return self.cyclers + (1 if self.maintenance_shares_heartbeat else 2) + 1


def plan_lanes(budget: int, num_workers: int) -> LanePlan:
    """Lanes within `budget` connections: NUM_WORKERS claim loops, the heartbeat, the
    maintenance loops and the listener want NUM_WORKERS + 3; with less, maintenance shares
    the heartbeat's lane, then claim loops are trimmed (at least one)."""
    wanted = LanePlan(num_workers, False)
    if budget >= wanted.connections:
        return wanted
    cyclers = max(1, min(num_workers, budget - 2))
    plan = LanePlan(cyclers, True)
    log.warning("MAX_DB_CONNECTIONS=%d is below the %d connections a worker with NUM_WORKERS=%d "
                "uses; running %d claim loop(s), maintenance sharing the heartbeat's connection",
                budget, wanted.connections, num_workers, cyclers)
    return plan


class HandlerConnections:
    """Connections for handlers that ask for one (JobContext.connection): a pool of what
    the budget leaves after the lanes (at least one), opened on first use, so a worker
    whose handlers never touch the database opens none of them."""

    def __init__(self, url: str, settings: Settings, size: int) -> None:
        self.url = url
        self.settings = settings
        self.size = max(1, size)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._opening = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await open_pool(self.url, self.settings, "handler",
                                                 max_size=self.size, wait=False)
        async with self._pool.connection(timeout=HANDLER_WAIT_S) as conn:
            yield conn

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close(timeout=5)
            self._pool = None
