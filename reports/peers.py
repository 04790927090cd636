"""Peer queues measured side by side with boundq on the same cluster (`peers` extra).

PgQueuer runs with its recommended setup: asyncpg, one QueueManager per consumer, each
with its own connection, `mode=drain`, a no-op async entrypoint. Its own schema is
installed into a fresh database and filled with its batch enqueue.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import time
from typing import Any


def pgqueuer_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("pgqueuer", "asyncpg"))


def setup_pgqueuer(url: str, jobs: int, chunk: int = 10_000) -> None:
    import asyncpg
    from pgqueuer.queries import Queries

    async def fill() -> None:
        conn = await asyncpg.connect(url)
        try:
            queries = Queries.from_asyncpg_connection(conn)
            await queries.install()
            left = jobs
            while left > 0:
                n = min(chunk, left)
                await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
                left -= n
        finally:
            await conn.close()

    asyncio.run(fill())


def run_pgqueuer_child(url: str, jobs: int, consumers: int, batch: int) -> float:
    import asyncpg
    import uvloop
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    async def consume(done: list[int]) -> None:
        conn = await asyncpg.connect(url)
        manager = QueueManager(Queries.from_asyncpg_connection(conn))

        @manager.entrypoint("noop")
        async def noop(job: Any) -> None:
            done[0] += 1

        try:
            await manager.run(batch_size=batch, mode=QueueExecutionMode.drain)
        finally:
            await conn.close()

    async def main() -> float:
        done = [0]
        started = time.perf_counter()
        await asyncio.gather(*(consume(done) for _ in range(consumers)))
        elapsed = time.perf_counter() - started
        if done[0] < jobs:
            raise RuntimeError(f"pgqueuer drained only {done[0]} of {jobs} jobs")
        return elapsed

    return float(uvloop.run(main()))


# --- procrastinate ------------------------------------------------------------------------
# Its recommended setup: the psycopg 3 connector, a worker with `concurrency` async slots,
# LISTEN/NOTIFY on, finished jobs kept (its default). `wait=False` ends the worker when
# the queue is empty (a drain).
PROCRASTINATE_CONCURRENCY = 10


def procrastinate_available() -> bool:
    return importlib.util.find_spec("procrastinate") is not None


def _procrastinate_app(url: str) -> Any:
    from procrastinate import App, PsycopgConnector

    return App(connector=PsycopgConnector(conninfo=url))


def setup_procrastinate(url: str, jobs: int, chunk: int = 5_000) -> None:
    async def fill() -> None:
        app = _procrastinate_app(url)

        @app.task(name="noop", queue="bench")
        async def noop() -> None:
            return None

        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            left = jobs
            while left > 0:
                n = min(chunk, left)
                await noop.batch_defer_async(*({} for _ in range(n)))
                left -= n

    asyncio.run(fill())


def run_procrastinate_child(url: str, jobs: int, concurrency: int) -> float:
    import uvloop

    async def main() -> float:
        app = _procrastinate_app(url)
        done = [0]

        @app.task(name="noop", queue="bench")
        async def noop() -> None:
            done[0] += 1

        async with app.open_async():
            started = time.perf_counter()
            await app.run_worker_async(queues=["bench"], concurrency=concurrency, wait=False,
                                       install_signal_handlers=False)
            elapsed = time.perf_counter() - started
        if done[0] < jobs:
            raise RuntimeError(f"procrastinate drained only {done[0]} of {jobs} jobs")
        return elapsed

    return float(uvloop.run(main()))


# --- long-running consumers of `sleep` jobs (reports/peer_consumers.py) -----------------
async def _until_sigterm() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def consume_pgqueuer(url: str, concurrency: int) -> None:
    import asyncpg
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    manager = QueueManager(Queries.from_asyncpg_connection(conn))

    @manager.entrypoint("sleep", concurrency_limit=concurrency)
    async def sleep(job: Any) -> None:
        await asyncio.sleep(int(json.loads(job.payload)["ms"]) / 1000)

    running = asyncio.create_task(manager.run(batch_size=concurrency))
    try:
        await _until_sigterm()
        manager.shutdown.set()
        await asyncio.wait_for(running, 30)
    finally:
        await conn.close()


async def consume_procrastinate(url: str, concurrency: int) -> None:
    app = _procrastinate_app(url)

    @app.task(name="sleep", queue="bench")
    async def sleep(ms: int) -> None:
        await asyncio.sleep(ms / 1000)

    async with app.open_async():
        worker = asyncio.create_task(app.run_worker_async(
            queues=["bench"], concurrency=concurrency, install_signal_handlers=False))
        await _until_sigterm()
        worker.cancel()  # procrastinate stops gracefully: running jobs finish first
        await asyncio.wait([worker], timeout=30)
