"""GET /jobs/{id}?wait=S over real HTTP: the answer comes when the job is terminal (woken
by the API's one polling round, not by the timeout), or after S with the job as it is;
waiters are bounded; a bad `wait` is a 422 naming it."""

from __future__ import annotations

import asyncio
import dataclasses

import psycopg
import pytest

from boundq.core import queue
from boundq.core.db import conninfo
from boundq.server.options import ApiOptions
from boundq.server.waits import WaitSettings
from tests.api.conftest import TEST_OPTIONS, Api, running_api

OWNER = "long-poll-test"


def _options(max_wait_s: float, poll_s: float = 0.05, max_waiters: int = 1000) -> ApiOptions:
    return dataclasses.replace(TEST_OPTIONS, waits=WaitSettings(max_wait_s, poll_s, max_waiters))


async def _create(api: Api) -> int:
    r = await api.client.post("/jobs", json={"name": "waited", "kind": "noop"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _until_waiting(api: Api) -> None:
    await asyncio.wait_for(api.state.waits.registered.wait(), 10)
    assert api.state.waits.waiting == 1


async def test_a_waiter_is_woken_when_its_job_succeeds(db_url: str) -> None:
    async with running_api(db_url, options=_options(max_wait_s=60, poll_s=0.05)) as api:
        job_id = await _create(api)
        answer = asyncio.create_task(api.client.get(f"/jobs/{job_id}", params={"wait": 60},
                                                    timeout=70))
        await _until_waiting(api)
        async with await psycopg.AsyncConnection.connect(conninfo(db_url, "worker"),
                                                         autocommit=True) as worker:
            [claimed] = await queue.claim(worker, OWNER, 1, 30)
            assert claimed.id == job_id
            await queue.complete_batch(worker, OWNER, [(job_id, claimed.attempt)],
                                       {job_id: '{"answer": 42}'})
        # Woken by a round long before the 60 s would pass (the timeout guards the test).
        r = await asyncio.wait_for(answer, 30)
        assert r.status_code == 200
        assert (r.json()["status"], r.json()["result"]) == ("success", {"answer": 42})
        assert api.state.waits.woken == 1 and api.state.waits.waiting == 0


async def test_a_wait_that_runs_out_answers_with_the_job_as_it_is(api: Api) -> None:
    job_id = await _create(api)
    r = await api.client.get(f"/jobs/{job_id}", params={"wait": "0.2"})
    assert (r.status_code, r.json()["status"]) == (200, "new")
    assert api.state.waits.woken == 0 and api.state.waits.waiting == 0


async def test_a_terminal_job_answers_at_once_without_waiting(api: Api) -> None:
    job_id = await _create(api)
    assert (await api.client.post(f"/jobs/{job_id}/cancel")).status_code == 200
    r = await api.client.get(f"/jobs/{job_id}", params={"wait": 2})
    assert (r.status_code, r.json()["status"]) == (200, "cancelled")
    assert api.state.waits.woken == 0  # no waiter was registered


async def test_a_missing_job_is_a_404_before_any_wait(api: Api) -> None:
    r = await api.client.get("/jobs/999999", params={"wait": 2})
    assert r.status_code == 404
    assert api.state.waits.waiting == 0


@pytest.mark.parametrize("bad", ["abc", "-1", "2.5", "nan", "inf", "1e999", "", "9" * 30])
async def test_bad_wait_is_a_422_naming_it(api: Api, bad: str) -> None:
    job_id = await _create(api)
    r = await api.client.get(f"/jobs/{job_id}", params={"wait": bad})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "wait"


async def test_waiters_are_bounded(db_url: str) -> None:
    async with running_api(db_url, options=_options(max_wait_s=30, max_waiters=1)) as api:
        first, second = await _create(api), await _create(api)
        held = asyncio.create_task(api.client.get(f"/jobs/{first}", params={"wait": 30},
                                                  timeout=40))
        await _until_waiting(api)
        r = await api.client.get(f"/jobs/{second}", params={"wait": 30})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["field"] == "wait" and "Retry-After" in r.headers
        await api.client.post(f"/jobs/{first}/cancel")  # ends the first wait
        assert (await asyncio.wait_for(held, 30)).json()["status"] == "cancelled"
