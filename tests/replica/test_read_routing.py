"""Reads through the replica: served there while it is close behind, by the primary when
it lags past REPLICA_MAX_LAG_SECONDS, is down, or does not have the job yet; never a 500.

Lag is made deterministic by pausing the replica's replay (pg_wal_replay_pause)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest

from boundq.core.pgembed import EmbeddedPostgres
from tests.api.conftest import Api, running_api
from tests.conftest import fast_settings
from tests.replica.conftest import Pair, pair_database, until

pytestmark = pytest.mark.slow  # a primary and a replica of its own (base backup)


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


async def scrape(api: Api) -> str:
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    return r.text


async def served(api: Api, pool: str) -> float:
    return metric(await scrape(api), "boundq_api_reads_total", pool=pool)


async def create(api: Api, name: str = "job") -> int:
    r = await api.client.post("/jobs", json={"name": name})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def replicated_api(primary_url: str, replica_url: str, max_lag: float = 60.0
                   ) -> contextlib.AbstractAsyncContextManager[Api]:
    settings = fast_settings(REPLICA_DATABASE_URL=replica_url,
                             REPLICA_MAX_LAG_SECONDS=str(max_lag))
    return running_api(primary_url, settings)


@pytest.fixture
async def api(pair: Pair) -> AsyncIterator[tuple[Api, Pair]]:
    with pair_database(pair) as (primary_url, replica_url):
        async with replicated_api(primary_url, replica_url) as running:
            await until(lambda: running.state.reads.in_use, "the replica in use")
            yield running, pair


async def test_reads_are_served_by_the_replica(api: tuple[Api, Pair]) -> None:
    client, pair = api
    job_id = await create(client)
    pair.caught_up()
    before = await served(client, "replica")
    for path in (f"/jobs/{job_id}", "/jobs", "/stats"):
        r = await client.client.get(path)
        assert r.status_code == 200, (path, r.text)
    assert await served(client, "replica") == before + 3
    # Proof that the replica answered: a write the replica has not replayed is not seen.
    pair.pause_replay()
    assert (await client.client.post(f"/jobs/{job_id}/cancel")).status_code == 200
    r = await client.client.get(f"/jobs/{job_id}")
    assert r.json()["status"] == "new"  # stale, but within REPLICA_MAX_LAG_SECONDS
    pair.resume_replay()
    await until(lambda: client.state.reads.in_use, "the replica in use")
    pair.caught_up()
    r = await client.client.get(f"/jobs/{job_id}")
    assert r.json()["status"] == "cancelled"
    text = await scrape(client)
    assert metric(text, "boundq_api_replica_in_use") == 1
    assert 0 <= metric(text, "boundq_api_replica_lag_seconds") <= 60


async def test_a_job_just_created_is_read_back_while_the_replica_lags(
        api: tuple[Api, Pair]) -> None:
    client, pair = api
    not_found = metric(await scrape(client), "boundq_api_replica_fallbacks_total",
                       reason="not_found")
    pair.pause_replay()
    job_id = await create(client, "fresh")
    assert client.state.reads.in_use  # the lag is under the limit: reads go to the replica
    r = await client.client.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == job_id and r.json()["name"] == "fresh"
    text = await scrape(client)
    assert metric(text, "boundq_api_replica_fallbacks_total", reason="not_found") == (
        not_found + 1)
    # A job that exists nowhere is still a 404, after asking both.
    r = await client.client.get(f"/jobs/{job_id + 1000}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_reads_go_to_the_primary_past_the_lag_limit_and_back(pair: Pair) -> None:
    with pair_database(pair) as (primary_url, replica_url):
        async with replicated_api(primary_url, replica_url, max_lag=1.0) as client:
            reads = client.state.reads
            await until(lambda: reads.in_use, "the replica in use")
            pair.pause_replay()
            job_id = await create(client)  # WAL the replica will not replay meanwhile
            await until(lambda: not reads.in_use, "reads to leave the lagging replica")
            assert reads.why_not == "lag" and reads.lag_s is not None and reads.lag_s > 1.0
            primary_before = await served(client, "primary")
            lag_before = metric(await scrape(client), "boundq_api_replica_fallbacks_total",
                                reason="lag")
            r = await client.client.get(f"/jobs/{job_id}")
            assert r.status_code == 200 and r.json()["id"] == job_id
            assert (await client.client.get("/jobs")).json()["jobs"][0]["id"] == job_id
            text = await scrape(client)
            assert metric(text, "boundq_api_reads_total", pool="primary") == primary_before + 2
            assert metric(text, "boundq_api_replica_fallbacks_total", reason="lag") == (
                lag_before + 2)
            assert metric(text, "boundq_api_replica_lag_seconds") > 1.0
            assert metric(text, "boundq_api_replica_in_use") == 0

            pair.resume_replay()
            await until(lambda: reads.in_use, "the replica in use again")
            replica_before = await served(client, "replica")
            assert (await client.client.get(f"/jobs/{job_id}")).status_code == 200
            assert await served(client, "replica") == replica_before + 1


async def test_replica_down_reads_fall_back_without_errors(pair: Pair) -> None:
    with pair_database(pair) as (primary_url, replica_url):
        async with replicated_api(primary_url, replica_url) as client:
            reads = client.state.reads
            await until(lambda: reads.in_use, "the replica in use")
            ids = [await create(client, f"j{i}") for i in range(5)]
            pair.caught_up()
            statuses: list[int] = []
            stop = asyncio.Event()

            async def reader() -> None:
                i = 0
                while not stop.is_set():
                    path = ("/stats", "/jobs", f"/jobs/{ids[i % len(ids)]}")[i % 3]
                    statuses.append((await client.client.get(path)).status_code)
                    i += 1

            readers = [asyncio.create_task(reader()) for _ in range(4)]
            try:
                await until(lambda: len(statuses) > 20, "reads before the stop")
                await asyncio.to_thread(pair.replica.stop, "immediate")
                await until(lambda: not reads.in_use, "reads to leave the stopped replica")
                assert reads.why_not == "unreachable"
                seen = len(statuses)
                await until(lambda: len(statuses) > seen + 20, "reads while it is down")
                primary_before = await served(client, "primary")
                await until(lambda: len(statuses) > seen + 40, "more reads")
                assert await served(client, "primary") > primary_before
            finally:
                stop.set()
                await asyncio.gather(*readers)
                await asyncio.to_thread(pair.replica.start)
            assert statuses and set(statuses) == {200}, sorted(set(statuses))
            # Back: the probe reaches it, the pool is replaced, reads return to it.
            await until(lambda: reads.in_use, "the replica in use again")
            before = await served(client, "replica")
            assert (await client.client.get(f"/jobs/{ids[0]}")).status_code == 200
            assert await served(client, "replica") == before + 1


async def test_a_server_that_is_not_a_standby_is_not_used(pair: Pair) -> None:
    """REPLICA_DATABASE_URL naming a primary (or a promoted replica): reads stay on the
    primary, with the reason in /metrics."""
    with pair_database(pair) as (primary_url, _):
        async with replicated_api(primary_url, primary_url) as client:
            await until(lambda: client.state.reads.why_not == "not_standby", "a verdict")
            before = await scrape(client)
            assert (await client.client.get("/jobs")).status_code == 200
            after = await scrape(client)
            fallbacks = "boundq_api_replica_fallbacks_total"
            assert (metric(after, fallbacks, reason="not_standby")
                    == metric(before, fallbacks, reason="not_standby") + 1)
            assert (metric(after, "boundq_api_reads_total", pool="replica")
                    == metric(before, "boundq_api_reads_total", pool="replica"))
            assert not client.state.reads.in_use


async def test_without_a_replica_every_read_is_the_primarys(db_url: str,
                                                             pg_cluster: EmbeddedPostgres) -> None:
    async with running_api(db_url) as client:
        assert not client.state.reads.configured
        before = await served(client, "primary")
        assert (await client.client.get("/jobs")).status_code == 200
        text = await scrape(client)
        assert metric(text, "boundq_api_reads_total", pool="primary") == before + 1
