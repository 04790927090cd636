"""A worker survives PostgreSQL crashing under it, and its LISTEN connection being killed.

The session's cluster is shared by every test: the crash test restarts it itself and makes
sure it runs again whatever happens (try/finally)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from boundq.core.pgembed import EmbeddedPostgres
from boundq.core.worker import Worker
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

        try:
            await wait_until(all_done, 60, interval=0.2, what="every job done after the restart")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{await _stall_report(worker, db_url)}") from None
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


async def _stall_report(worker: Worker, db_url: str) -> str:
    """What a stalled worker was doing: its loops' stacks, outbox, permits, pool and the
    server's sessions, so a rare stall can be diagnosed from one failed run."""
    lines = [f"permits free {worker.permits.free}/{worker.permits.total}; outbox "
             f"{len(worker.ledger.pending)} waiting, {worker.ledger.writing} being written; "
             f"held {len(worker.ledger)}; pool {worker.pool.get_stats()}"]
    for task in worker._loop_tasks:
        frames: list[str] = []
        awaited: Any = task.get_coro()
        last_frame: Any = None
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is None:
                # An @asynccontextmanager's generator hides behind its asend(): find it.
                holder = last_frame.f_locals.get("self") if last_frame is not None else None
                gen = getattr(holder, "gen", None)
                if gen is None or gen.ag_frame is None:
                    break
                awaited = gen
                continue
            last_frame = frame
            frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
        frames.append(repr(awaited)[:80])
        lines.append(f"{task.get_name()} done={task.done()} in {' -> '.join(frames)}")
    try:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c:
            lines += [str(r) for r in await rows(
                c, "SELECT application_name, state, wait_event_type, wait_event, "
                   "left(query, 60) AS query FROM pg_stat_activity "
                   "WHERE datname = current_database()")]
            lines.append(str(await rows(c, "SELECT status::text, count(*) FROM jobs "
                                           "GROUP BY 1")))
    except psycopg.Error as exc:
        lines.append(f"database: {exc}")
    return "\n".join(lines)


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


# An outage costs no lease when it lasts less than LEASE_SECONDS - HEARTBEAT_SECONDS minus
# the time to reconnect (docs/design.md, "Outages"): here 15 - 2 = 13 s, minus ~1 s.
OUTAGE_LEASE_S, OUTAGE_HEARTBEAT_S = 15.0, 2.0
RESUME_BOUND_S = 5.0  # resumes within ~1 s (measured); the bound leaves room for a busy CI


@pytest.mark.parametrize("down_s", [1.0, 4.0, 10.0], ids=["1s", "4s", "10s"])
async def test_processing_resumes_promptly_after_an_outage_and_no_lease_is_lost(
        pg_cluster: EmbeddedPostgres, db_url: str, down_s: float) -> None:
    """PostgreSQL stopped (`pg_ctl stop -m fast`) for 1, 4 and 10 s under a worker running
    jobs. Once it accepts connections again, jobs finish again within a second or so (the
    loops reconnect at once; nothing waits out a pool timeout), and no lease expires: the
    heartbeater extends them before they run out."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await add_jobs(conn, 400, kind="sleep", payload={"ms": 200}, max_attempts=1)
    settings = fast_settings(max_concurrent_jobs=5, lease_seconds=OUTAGE_LEASE_S,
                             heartbeat_seconds=OUTAGE_HEARTBEAT_S)
    worker = Worker(settings, db_url)
    await worker.start()
    try:
        await wait_until(lambda: _some_done(db_url, 10), 30, what="the worker running jobs")
        try:
            await asyncio.to_thread(pg_cluster.stop, "fast")
            await asyncio.sleep(down_s)
        finally:
            await asyncio.to_thread(pg_cluster.start)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            up_at = await scalar(conn, "SELECT pg_postmaster_start_time()")

            async def finished_after_restart() -> Any:
                return await scalar(conn, "SELECT min(finished_at) FROM jobs "
                                          "WHERE finished_at > %s", (up_at,))

            first = await wait_until(finished_after_restart, 30, interval=0.1,
                                     what="a job finished after the restart")
            resumed_s = (first - up_at).total_seconds()
            assert resumed_s < RESUME_BOUND_S, f"processing resumed {resumed_s:.2f}s after " \
                                               f"PostgreSQL was back ({down_s}s outage)"
            lost = await scalar(conn, "SELECT count(*) FROM job_attempts "
                                      "WHERE outcome = 'lost'")
            failed = await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'failed'")
    finally:
        if not pg_cluster.running():
            await asyncio.to_thread(pg_cluster.start)
        await worker.stop(grace_s=0)
    assert worker.metrics.db_errors > 0, "the outage was never noticed: the test proves nothing"
    assert (lost, failed) == (0, 0), "a lease expired because of the outage alone"
