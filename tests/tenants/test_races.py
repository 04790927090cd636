"""Cancel and retry across tenants under concurrency: the scope is checked in the
transaction of the change, under the row's lock, so no interleaving lets a token change a
job of another queue."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import psycopg

from tests.api.conftest import TEST_OPTIONS, running_api
from tests.helpers import wait_until
from tests.tenants.conftest import Tenants, same_apart_from, tenant_settings

MISSING = 987_654_321


async def _waiting_on_a_lock(tenants: Tenants) -> bool:
    rows = await tenants.api.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND application_name = 'boundq-api'")
    return int(rows[0][0]) > 0


async def test_a_cancel_acts_on_the_row_it_checked(tenants: Tenants) -> None:
    """B cancels its own waiting job while another session (an operator's SQL) moves that
    job to A's queue and holds the row until it commits. B's cancel waits for the row;
    once the move commits it finds a job of queue `a`, answers 404 and changes nothing.
    A check made before the change (outside its lock) would have seen queue `b`, and the
    cancel would then have reached A's job."""
    job = await tenants.create("B", "b")
    async with await psycopg.AsyncConnection.connect(tenants.api.db_url) as mover:
        await mover.execute("UPDATE jobs SET queue = 'a' WHERE id = %s", (job["id"],))
        cancel = asyncio.create_task(tenants.call("B", "POST", f"/jobs/{job['id']}/cancel"))
        await wait_until(lambda: _waiting_on_a_lock(tenants), within=30,
                         what="B's cancel to wait for the row")
        assert not cancel.done()
        await mover.commit()
        r = await cancel
    missing = await tenants.call("B", "POST", f"/jobs/{MISSING}/cancel")
    assert r.status_code == 404 and same_apart_from(r, missing, job["id"], MISSING), r.text
    assert await tenants.status(job["id"]) == "new"
    r = await tenants.call("A", "POST", f"/jobs/{job['id']}/cancel")  # it is A's now
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


async def test_cross_tenant_cancels_and_retries_in_a_crowd_change_nothing(db_url: str
                                                                          ) -> None:
    """A cancels and retries its own jobs while B fires the same requests at them at the
    same moment: every answer B gets is the missing-job 404, and each of A's jobs ends as
    A's own request left it."""
    # room for every request to wait its turn for a connection instead of a 503
    options = replace(TEST_OPTIONS, pool_size=6, pool_wait_s=60.0)
    async with running_api(db_url, tenant_settings(), options) as api:
        await _crowd(Tenants(api))


async def _crowd(tenants: Tenants) -> None:
    waiting = [(await tenants.create("A", "a"))["id"] for _ in range(12)]
    dead = [await tenants.dead_letter("A", "a") for _ in range(6)]
    mine = [(await tenants.create("B", "b"))["id"] for _ in range(6)]
    touched_by_a = set(waiting[::2]) | set(dead[::2])
    requests = []
    for job_id in waiting:
        requests.append(("B", job_id, "cancel"))
        if job_id in touched_by_a:
            requests.append(("A", job_id, "cancel"))
    for job_id in dead:
        requests.append(("B", job_id, "retry"))
        if job_id in touched_by_a:
            requests.append(("A", job_id, "retry"))
    requests += [("B", job_id, "cancel") for job_id in mine]
    replies = await asyncio.gather(*(tenants.call(who, "POST", f"/jobs/{job_id}/{action}")
                                     for who, job_id, action in requests))
    missing = {action: await tenants.call("B", "POST", f"/jobs/{MISSING}/{action}")
               for action in ("cancel", "retry")}
    for (who, job_id, action), r in zip(requests, replies, strict=True):
        if who == "A" or job_id in mine:
            assert r.status_code == 200, (who, job_id, action, r.text)
        else:
            assert r.status_code == 404, (job_id, action, r.text)
            assert same_apart_from(r, missing[action], job_id, MISSING), r.text
    for job_id in waiting:
        assert await tenants.status(job_id) == ("cancelled" if job_id in touched_by_a
                                                else "new"), job_id
    for job_id in dead:
        assert await tenants.status(job_id) == ("new" if job_id in touched_by_a
                                                else "failed"), job_id
    for job_id in mine:
        assert await tenants.status(job_id) == "cancelled"
