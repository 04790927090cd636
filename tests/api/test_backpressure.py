"""Bounded waiting: a full queue is a 429, an exhausted pool a 503 after a bounded wait,
a database outage fast 503s and then recovery on its own, with no acknowledged job lost."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time

import httpx
import psycopg
import pytest

from boundq.core.pgembed import EmbeddedPostgres
from tests.api.conftest import Api, running_api
from tests.conftest import fast_settings


async def test_queue_depth_limit_is_429(db_url: str) -> None:
    async with running_api(db_url, fast_settings(MAX_QUEUE_DEPTH=5)) as api:
        for i in range(5):
            assert (await api.client.post("/jobs", json={"name": f"j{i}"})).status_code == 201
        # A refusal rests on a real count; one the monitor made during the creates may be
        # fresher than RECOUNT_MIN_S and below the limit (a bounded overshoot): count now.
        await api.state.monitor.refresh_once(force_count=True)
        r = await api.client.post("/jobs", json={"name": "one too many"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        assert int(r.headers["retry-after"]) >= 1
        r = await api.client.post("/jobs/bulk", json=[{"name": "b"}])
        assert r.status_code == 429
        assert await api.count_jobs() == 5
        # reads still work, and once jobs leave `new` creates are admitted again
        assert (await api.client.get("/jobs")).status_code == 200
        await api.sql("UPDATE jobs SET status = 'cancelled', finished_at = now()")
        deadline = time.monotonic() + 5
        while (r := await api.client.post("/jobs", json={"name": "again"})).status_code == 429:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert r.status_code == 201


async def test_creates_the_workers_keep_up_with_are_never_refused(db_url: str) -> None:
    """Between counts the API's figure of waiting jobs only grows by its own creates; jobs
    the workers took meanwhile must not turn into 429s while the queue is far from full."""
    settings = fast_settings(MAX_QUEUE_DEPTH=20)
    async with running_api(db_url, settings) as api:
        for i in range(60):  # three times the limit, every one taken at once by a "worker"
            r = await api.client.post("/jobs", json={"name": f"j{i}"})
            assert r.status_code == 201, (i, r.status_code, r.text)
            await api.sql("UPDATE jobs SET status = 'cancelled', finished_at = now() "
                          "WHERE status = 'new'")
        assert await api.count_jobs() == 60


async def test_exhausted_pool_is_503_after_a_bounded_wait(api: Api) -> None:
    pool = api.state.pool.pool
    held = [await pool.getconn() for _ in range(api.state.pool.size)]
    try:
        for method, path, body in (("POST", "/jobs", {"name": "x"}), ("GET", "/jobs", None),
                                   ("GET", "/stats", None)):
            timeouts = pool.get_stats().get("requests_errors", 0)
            r = await api.client.request(method, path, json=body)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"]["code"] == "busy" and r.headers["retry-after"] == "1"
            # The request waited for a connection and gave up (the pool counts the
            # timeout): a bounded wait, not a hang and not an instant refusal.
            assert pool.get_stats().get("requests_errors", 0) > timeouts
        assert (await api.client.get("/healthz")).status_code == 200
        assert (await api.client.get("/readyz")).status_code == 200  # busy is not down
    finally:
        for conn in held:
            await pool.putconn(conn)
    assert (await api.client.post("/jobs", json={"name": "after"})).status_code == 201
    assert await api.count_jobs() == 1
    # At least the three answers above; a busy machine may add the monitor's own refresh
    # meeting the held pool (5 pool timeouts were counted in one such run).
    found = re.search(r"^boundq_api_pool_busy_total (\S+)$",
                      (await api.client.get("/metrics")).text, re.M)
    assert found is not None and float(found.group(1)) >= 3, found


def _durable_commits(pg_cluster: EmbeddedPostgres, db_url: str) -> None:
    name = db_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')


async def _create_forever(client: httpx.AsyncClient, acknowledged: list[int],
                          statuses: list[int], stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        with contextlib.suppress(httpx.TransportError):
            r = await client.post("/jobs", json={"name": f"flow{i}"})
            statuses.append(r.status_code)
            if r.status_code in (200, 201):
                acknowledged.append(r.json()["id"])
        await asyncio.sleep(0.005)


@pytest.mark.slow
async def test_database_outage_fast_503_then_recovery(pg_cluster: EmbeddedPostgres,
                                                      db_url: str) -> None:
    # The test cluster runs with synchronous_commit=off, which may drop the last commits
    # of a crash; a durable server (and this database from here on) waits for the WAL.
    await asyncio.to_thread(_durable_commits, pg_cluster, db_url)
    async with running_api(db_url) as api:
        acknowledged: list[int] = []
        statuses: list[int] = []
        stop = asyncio.Event()
        flow = asyncio.create_task(_create_forever(api.client, acknowledged, statuses, stop))
        await asyncio.sleep(0.3)
        assert acknowledged, statuses
        await asyncio.to_thread(pg_cluster.stop, mode="immediate")
        try:
            await asyncio.sleep(0.3)
            for _ in range(5):
                started = time.monotonic()
                r = await api.client.post("/jobs", json={"name": "during"})
                assert time.monotonic() - started < 2, "a create hung while the database is down"
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] and r.json()["error"]["code"] in (
                    "database_unavailable", "busy")
            r = await api.client.get("/readyz")
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
            assert (await api.client.get("/jobs/1")).status_code == 503
            assert (await api.client.get("/healthz")).status_code == 200
        finally:
            await asyncio.to_thread(pg_cluster.start)
        deadline = time.monotonic() + 15
        while (await api.client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover"
            await asyncio.sleep(0.1)
        before = len(acknowledged)
        deadline = time.monotonic() + 10
        while len(acknowledged) < before + 10:
            assert time.monotonic() < deadline, statuses[-20:]
            await asyncio.sleep(0.05)
        stop.set()
        await flow
        assert 500 not in statuses and set(statuses) <= {201, 503}
        assert 503 in statuses
        found = {row[0] for row in await api.sql("SELECT id FROM jobs")}
        assert set(acknowledged) <= found, "a job acknowledged with 2xx was lost"
