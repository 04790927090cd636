"""Graceful stop: running jobs finish and are written; stop returns as soon as they are,
not after the whole grace period."""

from __future__ import annotations

import time

from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import add_jobs, scalar, wait_until


async def test_stop_returns_when_running_jobs_are_written_not_after_grace(db_url, conn) -> None:
    await add_jobs(conn, 3, kind="sleep", payload={"ms": 400})
    worker = Worker(fast_settings(shutdown_grace_seconds=20, max_concurrent_jobs=5), db_url)
    await worker.start()
    await wait_until(lambda: _count(conn, "processing", 3), within=10)
    started = time.monotonic()
    await worker.stop()
    took = time.monotonic() - started
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == 3
    assert took < 5, f"stop took {took:.1f}s with 0.4s jobs and a 20s grace"
    assert worker.permits.free == worker.permits.total


async def _count(conn, status: str, n: int) -> bool:
    return await scalar(conn, "SELECT count(*) FROM jobs WHERE status = %s", (status,)) == n


async def test_stop_releases_jobs_still_running_after_grace(db_url, conn) -> None:
    await add_jobs(conn, 2, kind="sleep", payload={"ms": 60_000})
    worker = Worker(fast_settings(shutdown_grace_seconds=0.5), db_url)
    await worker.start()
    await wait_until(lambda: _count(conn, "processing", 2), within=10)
    await worker.stop()
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'new'") == 2
    lost = await scalar(conn, "SELECT count(*) FROM job_attempts WHERE outcome = 'lost' "
                              "AND error = 'released at worker shutdown'")
    assert lost == 2
    assert worker.permits.free == worker.permits.total
