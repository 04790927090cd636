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


# Session settings of the worker's connections. The claim must walk jobs_claim_idx in
# order and stop at LIMIT; on a never-analyzed or just bulk-loaded table the planner's
# default estimates made it bitmap-scan every waiting row and sort them instead (54 ms
# instead of 3 ms a claim, measured here). Its statements never need a sort, so forbid it.
# JIT compilation of a mis-estimated plan can cost more than the query itself.
# A plan cached while the queue was empty (or planned from statistics of a drained queue)
# turned each claim into a scan of every waiting row once a backlog arrived (1-2 s a claim):
# plan every execution afresh; planning costs ~0.3 ms a batch.
# Every worker statement reaches its rows through an index (the claim and reaper indexes,
# the primary keys), but on a never-analyzed table the planner guessed that a fenced
# batch's guard (owner, status) matched one row and scanned the whole table for it: 90 ms
# instead of 10 ms per 500 completions, a tenfold slower drain. Forbid the sequential scan.
ROLE_OPTIONS: dict[str, str] = {
    "worker": ("-c enable_sort=off -c enable_seqscan=off -c jit=off"
               " -c plan_cache_mode=force_custom_plan"),
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
