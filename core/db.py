"""Connections: conninfo with deadlines, pools sized by the budget, fast JSON.

Every boundq connection carries an application_name naming its role (api, worker,
listener, ...) so tests and operators can count them in pg_stat_activity, and TCP
keepalives plus tcp_user_timeout so a black-holed network is noticed in seconds, not
after the kernel's ~15 minutes of retransmits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import msgspec
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from boundq.core.config import Settings

log = logging.getLogger("boundq.db")

_encoder = msgspec.json.Encoder()
set_json_dumps(_encoder.encode)
set_json_loads(msgspec.json.decode)

# Server connections of one process: its pool plus the LISTEN connection.
LISTENER_CONNECTIONS = 1
CONNECT_TIMEOUT_S = 5


# Session settings of the worker's connections. Every worker statement has one right plan:
# walk an index (the claim index in claim order, the primary key, the lease-owner and
# scheduled indexes) and join by nested loops over a batch of at most a few thousand
# rows. The planner, left to its estimates, found worse ones on tables it had no
# statistics for (measured here): on a never-analyzed or just bulk-loaded table the claim
# bitmap-scanned and sorted every waiting row (54 ms a claim instead of 3 ms); a fenced
# batch's guard (owner, status) was taken for one row and the whole table scanned per
# completion batch (90 ms instead of 10 ms per 500); a batch of unknown size was hash-
# joined against a full scan of the primary key. So sorts, sequential and bitmap scans,
# hash and merge joins are off for these sessions (each has an index path), and with the
# plan's shape fixed, each statement is planned once per connection (a generic plan,
# prepared on first use) instead of on every execution: planning the claim-and-complete
# statement cost more than running it (~2-3 ms against ~1 ms a cycle, measured here).
# JIT compilation of a mis-estimated plan can cost more than the query itself.
WORKER_OPTIONS = ("-c enable_sort=off -c enable_seqscan=off -c enable_bitmapscan=off"
                  " -c enable_hashjoin=off -c enable_mergejoin=off -c jit=off"
                  " -c plan_cache_mode=force_generic_plan")
ROLE_OPTIONS: dict[str, str] = {
    "worker": WORKER_OPTIONS,
    "heartbeat": WORKER_OPTIONS,
    "maintenance": WORKER_OPTIONS,
    "api": "-c jit=off",
}


def conninfo(url: str, role: str, **extra: Any) -> str:
    params = conninfo_to_dict(url)
    if role in ROLE_OPTIONS:
        params["options"] = f"{params.get('options', '')} {ROLE_OPTIONS[role]}".strip()
    params.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 5)
    params.setdefault("keepalives_interval", 2)
    params.setdefault("keepalives_count", 3)
    params.setdefault("tcp_user_timeout", 10_000)
    params["application_name"] = f"boundq-{role}"
    params.update(extra)
    return make_conninfo("", **params)


def pool_max_size(settings: Settings, server_limit: int | None = None) -> int:
    """Pool size for one process: the connection budget minus the LISTEN connection,
    capped below what the server allows (leaving room for others)."""
    size = max(settings.db_connections - LISTENER_CONNECTIONS, 2)
    if server_limit is not None:
        room = max(server_limit - 10, 2)
        if size > room:
            log.warning(
                "pool size %d exceeds what the server allows (max_connections=%d); using %d",
                size, server_limit, room,
            )
            size = room
    return size


async def server_max_connections(url: str) -> int | None:
    try:
        async with await connect(url, "probe") as conn:
            cur = await conn.execute("SHOW max_connections")
            row = await cur.fetchone()
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


class Connection(psycopg.AsyncConnection[Any]):
    """psycopg's AsyncConnection, minus a leak: a connection attempt that times out (or is
    cancelled) keeps its half-open socket alive through the exception's traceback until
    the garbage collector runs, and after a partition heals it completes into a server
    session nobody owns, over the connection budget. Drop the traceback and collect."""

    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> Connection:
        try:
            return await super().connect(*args, **kwargs)
        except (psycopg.errors.ConnectionTimeout, TimeoutError, asyncio.CancelledError) as exc:
            exc.__traceback__ = None
            del exc
            gc.collect()
            raise


async def connect(url: str, role: str) -> Connection:
    """One autocommit connection outside any pool (the LISTEN connection, probes)."""
    return await Connection.connect(conninfo(url, role), autocommit=True)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


async def open_pool(
    url: str, settings: Settings, role: str, max_size: int | None = None, wait: bool = True
) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
    """An autocommit pool; `wait=False` opens even while the database is down.

    Without `max_size` the pool takes the process's budget, capped below the server's
    max_connections: that is read through the pool itself, so no extra connection ever
    counts against the budget.
    """
    size = max_size if max_size is not None else pool_max_size(settings)
    pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
        conninfo(url, role),
        min_size=min(2, size),
        max_size=size,
        configure=_configure,
        connection_class=Connection,
        open=False,
        timeout=30,
        # Background reconnection backs off by doubling without a cap; give up after a
        # short while and let demand (the loops, which back off themselves) reconnect.
        reconnect_timeout=10,
        name=f"boundq-{role}",
    )
    await pool.open(wait=wait, timeout=30)
    if max_size is None:
        try:
            async with pool.connection(timeout=2) as conn:
                cur = await conn.execute("SHOW max_connections")
                row = await cur.fetchone()
            capped = pool_max_size(settings, int(row[0])) if row else size
            if capped < size:
                await pool.resize(min(2, capped), capped)
        except (psycopg.Error, PoolTimeout):
            pass  # unreachable now: the formula stands until the next start
    return pool


def encode_json(value: Any) -> str:
    return _encoder.encode(value).decode()
