"""bounded_concurrency, measured from the database: a worker never holds more jobs than
MAX_CONCURRENT_JOBS, and never opens more connections than MAX_DB_CONNECTIONS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import psycopg

from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import add_jobs, max_overlap, rows, scalar, wait_until


async def _sample(
    probe: Callable[[], Awaitable[int]], stop: asyncio.Event, every: float = 0.01
) -> list[int]:
    seen: list[int] = []
    while not stop.is_set():
        seen.append(await probe())
        await asyncio.sleep(every)
    return seen


async def _drained(conn, n: int) -> bool:
    return await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == n


async def test_in_flight_jobs_never_exceed_max_concurrent_jobs(db_url, conn) -> None:
    limit, backlog = 5, 50
    await add_jobs(conn, backlog, kind="sleep", payload={"ms": 80})
    worker = Worker(fast_settings(max_concurrent_jobs=limit, num_workers=3), db_url)
    sampler = await psycopg.AsyncConnection.connect(db_url, autocommit=True)

    async def processing() -> int:
        cur = await sampler.execute(
            "SELECT count(*) FROM jobs WHERE status = 'processing' AND lease_owner = %s",
            (worker.owner,))
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    stop = asyncio.Event()
    await worker.start()
    sampling = asyncio.create_task(_sample(processing, stop))
    try:
        await wait_until(lambda: _drained(conn, backlog), 30, what="backlog drained")
    finally:
        stop.set()
        seen = await sampling
        await worker.stop()
        await sampler.close()

    assert max(seen) <= limit, max(seen)
    assert max(seen) >= 2, "the sampler never saw parallel work: the test proves nothing"
    assert worker.permits.high_water == limit
    assert worker.metrics.in_flight_high_water <= limit
    intervals = await rows(conn, "SELECT a.owner, a.claimed_at, a.finished_at, "
                                 "j.started_at, j.finished_at AS job_finished_at "
                                 "FROM job_attempts a JOIN jobs j ON j.id = a.job_id")
    assert len(intervals) == backlog
    assert {r["owner"] for r in intervals} == {worker.owner}
    # Each row spans its lease exactly: from the claim to the completion that ended it.
    assert all((r["claimed_at"], r["finished_at"]) == (r["started_at"], r["job_finished_at"])
               for r in intervals)
    overlap = max_overlap((r["claimed_at"], r["finished_at"]) for r in intervals)
    assert 2 <= overlap <= limit, overlap


async def test_connections_never_exceed_max_db_connections(db_url, conn) -> None:
    budget, backlog = 4, 400
    await add_jobs(conn, backlog, kind="sleep", payload={"ms": 5})
    worker = Worker(fast_settings(max_concurrent_jobs=8, num_workers=3,
                                  max_db_connections=budget), db_url)
    sampler = await psycopg.AsyncConnection.connect(db_url, autocommit=True)

    async def connections() -> int:
        cur = await sampler.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'boundq-%%'")
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])

    stop = asyncio.Event()
    sampling = asyncio.create_task(_sample(connections, stop, every=0.005))
    await worker.start()
    try:
        await wait_until(lambda: _drained(conn, backlog), 60, what="backlog drained")
    finally:
        stop.set()
        seen = await sampling
        await worker.stop()
        await sampler.close()
    # Below what three claim loops want: two loops, maintenance on the heartbeat's lane.
    assert (len(worker.cyclers), len(worker.lanes) + 1) == (2, budget)
    assert max(seen) <= budget, max(seen)
    assert max(seen) >= 2, seen


async def test_a_worker_opens_what_its_loops_use_not_the_budget(db_url, conn) -> None:
    """The budget (the formula) is a ceiling: a worker opens one connection per loop that
    talks to the database, NUM_WORKERS + 3, however many permits it has."""
    settings = fast_settings(num_workers=2, max_concurrent_jobs=40, api_pool_buffer=3)
    assert settings.db_connections == 2 + 40 + 3
    await add_jobs(conn, 300, kind="sleep", payload={"ms": 5})
    worker = Worker(settings, db_url)
    await worker.start()
    try:
        await wait_until(lambda: _drained(conn, 300), 60, what="backlog drained")
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'boundq-%%'")
        row = await cur.fetchone()
        assert row is not None and row[0] <= 2 + 3, row
    finally:
        await worker.stop()
    assert len(worker.lanes) + 1 == 2 + 3
