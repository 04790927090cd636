"""Steady state: jobs arrive at a fixed rate (open loop) while consumers run.

The enqueuer (this process) inserts rate x tick jobs every 20 ms tick for `seconds`,
whatever the consumers do. Latency of a job:

  boundq   from the database: enqueue->start = started_at - created_at, enqueue->finish =
           finished_at - created_at (one clock, the server's)
  peers    measured by their handler: wall time at handler start minus the enqueue time
           carried in the payload (their finish time is not observable the same way)

boundq runs as `boundq worker` (default settings unless given); each peer in a child
process of this module with its recommended setup (reports/peers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from typing import Any

import psycopg

from boundq.core.children import child_env
from boundq.reports.dbwatch import boundq_work_left, connect
from boundq.reports.drain_run import watch, worker_process
from boundq.reports.openloop import open_loop
from boundq.reports.peers import PROCRASTINATE_CONCURRENCY


async def enqueue(system: str, url: str, rate: float, seconds: float) -> int:
    if system == "boundq":
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            async def insert(n: int) -> None:
                await conn.execute("INSERT INTO jobs (name, kind) SELECT 'steady', 'noop' "
                                   "FROM generate_series(1, %s)", (n,))
            return await open_loop(rate, seconds, insert)
    if system == "pgqueuer":
        import asyncpg
        from pgqueuer.queries import Queries

        pg = await asyncpg.connect(url)
        queries = Queries.from_asyncpg_connection(pg)
        try:
            async def insert_pgq(n: int) -> None:
                now = str(time.time()).encode()
                await queries.enqueue(["noop"] * n, [now] * n, [0] * n)
            return await open_loop(rate, seconds, insert_pgq)
        finally:
            await pg.close()
    from boundq.reports.peers import _procrastinate_app

    app = _procrastinate_app(url)

    @app.task(name="noop", queue="bench")
    async def noop(t: float) -> None:
        return None

    async with app.open_async():
        async def insert_pc(n: int) -> None:
            now = time.time()
            await noop.batch_defer_async(*({"t": now} for _ in range(n)))
        return await open_loop(rate, seconds, insert_pc)


def run_boundq(url: str, rate: float, seconds: float, env: dict[str, str]) -> dict[str, Any]:
    with worker_process(url, env) as proc, connect(url) as conn:
        time.sleep(1.5)  # start-up and first poll
        sent = asyncio.run(enqueue("boundq", url, rate, seconds))
        # SIGTERM once nothing waits or runs
        watch(proc, conn, lambda: not boundq_work_left(conn), timeout_s=seconds + 120)
    return {"sent": sent, **boundq_latency(url)}


def boundq_latency(url: str) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), extract(epoch FROM max(finished_at) - min(created_at)), "
            + ", ".join(f"percentile_cont({q}) WITHIN GROUP (ORDER BY extract(epoch FROM "
                        f"{col} - created_at))"
                        for col in ("started_at", "finished_at") for q in (0.5, 0.95, 0.99))
            + " FROM jobs WHERE status = 'success'").fetchone()
    assert row is not None
    n, span, *pcts = row
    names = [f"{p}_{q}" for p in ("start", "finish") for q in ("p50", "p95", "p99")]
    return {"processed": int(n), "processed_per_s": int(n) / float(span) if span else 0.0,
            **{k: float(v) for k, v in zip(names, pcts, strict=True) if v is not None}}


# --- peers: the consumer child -----------------------------------------------------------
def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"start_p50": pick(0.5), "start_p95": pick(0.95), "start_p99": pick(0.99)}


async def _consume(system: str, url: str, expect: int, deadline_s: float) -> dict[str, Any]:
    seen: list[float] = []
    done = asyncio.Event()

    def record(t_enqueued: float) -> None:
        seen.append(time.time() - t_enqueued)
        if len(seen) >= expect:
            done.set()

    print("ready", flush=True)
    if system == "pgqueuer":
        import asyncpg
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries

        managers = []
        for _ in range(5):  # 5 consumers x batch 50, each its own connection
            manager = QueueManager(Queries.from_asyncpg_connection(await asyncpg.connect(url)))

            @manager.entrypoint("noop")
            async def noop(job: Any) -> None:
                record(float(job.payload))

            managers.append(manager)
        tasks = [asyncio.create_task(m.run(batch_size=50)) for m in managers]
        with contextlib.suppress(TimeoutError):  # fell behind: report what it processed
            await asyncio.wait_for(done.wait(), deadline_s)
        for m in managers:
            m.shutdown.set()
        await asyncio.wait(tasks, timeout=10)
    else:
        from boundq.reports.peers import _procrastinate_app

        app = _procrastinate_app(url)

        @app.task(name="noop", queue="bench")
        async def noop_pc(t: float) -> None:
            record(t)

        async with app.open_async():
            worker = asyncio.create_task(app.run_worker_async(
                queues=["bench"], concurrency=PROCRASTINATE_CONCURRENCY,
                install_signal_handlers=False))
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), deadline_s)
            finally:
                worker.cancel()
                await asyncio.wait([worker], timeout=10)
    return {"processed": len(seen), "last_at": time.time(), **_percentiles(seen)}


def run_peer(system: str, url: str, rate: float, seconds: float) -> dict[str, Any]:
    expect = int(rate * seconds)
    argv = [sys.executable, "-m", "boundq.reports.steady", system, url, str(expect),
            str(seconds + 60)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=child_env(), text=True)
    assert child.stdout is not None
    child.stdout.readline()  # "ready"
    time.sleep(0.5)
    started = time.time()
    sent = asyncio.run(enqueue(system, url, rate, seconds))
    out, err = child.communicate(timeout=seconds + 90)
    if child.returncode != 0:
        raise RuntimeError(f"{system} consumer failed: {err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    span = result.pop("last_at") - started
    result["processed_per_s"] = result["processed"] / span if span > 0 else 0.0
    result["sent"] = sent
    return result


if __name__ == "__main__":
    import uvloop

    name, db, count, limit = sys.argv[1:5]
    print(json.dumps(uvloop.run(_consume(name, db, int(count), float(limit)))), flush=True)
