"""A worker survives PostgreSQL crashing under it, and its LISTEN connection being killed.

The session's cluster is shared by every test: the crash test restarts it itself and makes
sure it runs again whatever happens (try/finally)."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from core.pgembed import EmbeddedPostgres
from core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import add_job, add_jobs, max_overlap, rows, scalar, wait_until

pytestmark = pytest.mark.slow


async def _count(db_url: str, status: str) -> int:
    try:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True,
                                                         connect_timeout=2) as c:
            return int(await scalar(c, "SELECT count(*) FROM jobs WHERE status = %s",
                                    (status,)))
    except psycopg.OperationalError:
        return -1


async def test_worker_survives_a_postgres_crash(pg_cluster: EmbeddedPostgres, db_url) -> None:
    total = 60
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await add_jobs(conn, total, kind="sleep", payload={"ms": 150}, max_attempts=10)
    worker = Worker(fast_settings(max_concurrent_jobs=5), db_url)
    await worker.start()
    try:
        await wait_until(lambda: _some_done(db_url, 5), 20, what="a few jobs done")
        try:
            await asyncio.to_thread(pg_cluster.stop, "immediate")
            await asyncio.sleep(1.0)
        finally:
            await asyncio.to_thread(pg_cluster.start)
        assert all(not t.done() for t in worker._loop_tasks), "a worker loop ended"

        async def all_done():
            return await _count(db_url, "success") == total

        await wait_until(all_done, 60, interval=0.2, what="every job done after the restart")
    finally:
        if not pg_cluster.running():
            await asyncio.to_thread(pg_cluster.start)
        await worker.stop()

    assert worker.metrics.db_errors > 0, "the outage was never noticed: the test proves nothing"
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        found = await rows(conn, "SELECT job_id, attempt, claimed_at, finished_at, "
                                 "outcome::text AS outcome FROM job_attempts")
        assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status <> 'success'") == 0
        counted = {r["id"]: r["attempts"] for r in await rows(conn, "SELECT id, attempts "
                                                                    "FROM jobs")}
    by_job: dict[int, list[dict]] = {}
    for r in found:
        by_job.setdefault(r["job_id"], []).append(r)
    assert len(by_job) == total
    for job_id, attempts in by_job.items():
        attempts.sort(key=lambda a: a["attempt"])
        # Every attempt the job counted ended with its row, even those the crash cut short.
        assert [a["attempt"] for a in attempts] == list(range(1, counted[job_id] + 1)), attempts
        assert [a["outcome"] for a in attempts][-1] == "success", attempts
        assert "success" not in [a["outcome"] for a in attempts][:-1], attempts
        # single_owner: one job's attempts never overlap in time (by the database clock)
        assert max_overlap((a["claimed_at"], a["finished_at"]) for a in attempts) == 1, (
            job_id, attempts)


async def _some_done(db_url: str, n: int) -> bool:
    return await _count(db_url, "success") >= n


async def test_listener_reconnects_after_its_connection_is_killed(db_url, conn) -> None:
    # Polling so slow that only a NOTIFY can make a job start quickly.
    worker = Worker(fast_settings(poll_interval_seconds=30), db_url)
    await worker.start()
    try:
        await wait_until(lambda: _connects(worker, 1), 10, what="listener connected")
        await asyncio.sleep(0.5)  # let the acquirers settle into their long idle sleep
        first = await add_job(conn, name="first")
        await wait_until(lambda: _done(conn, first), 5, what="job woken by NOTIFY")

        killed = await scalar(
            conn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                  "WHERE application_name = 'boundq-listener' AND datname = current_database()")
        assert killed == 1
        await wait_until(lambda: _connects(worker, 2), 15, what="listener reconnected")
        await asyncio.sleep(0.5)
        second = await add_job(conn, name="second")
        await wait_until(lambda: _done(conn, second), 5, what="job woken after reconnect")
    finally:
        await worker.stop()
    assert worker.listener.connects >= 2


async def _connects(worker: Worker, n: int) -> bool:
    return worker.listener.connects >= n and worker.listener.listening.is_set()


async def _done(conn, job_id: int) -> bool:
    return await scalar(conn, "SELECT status::text FROM jobs WHERE id = %s", (job_id,)) == "success"
