"""Peer queues measured side by side with boundq on the same cluster (`peers` extra).

PgQueuer runs with its recommended setup: asyncpg, one QueueManager per consumer, each
with its own connection, `mode=drain`, a no-op async entrypoint. Its own schema is
installed into a fresh database and filled with its batch enqueue.
"""

from __future__ import annotations

import asyncio
import importlib.util
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
