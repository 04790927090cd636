"""MAX_QUEUE_DEPTH per queue: tenant A's full queue refuses A's creates (single, bulk,
retry) and no one else's; a tenant never learns that another tenant's queue is full; a
bulk upload naming a full queue follows the bulk API's atomic / partial semantics."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.conftest import TEST_OPTIONS, running_api
from tests.tenants.conftest import Tenants, tenant_settings

DEPTH = 5


@pytest.fixture
async def shallow(db_url: str) -> AsyncIterator[Tenants]:
    async with running_api(db_url, tenant_settings(MAX_QUEUE_DEPTH=DEPTH), TEST_OPTIONS) as api:
        yield Tenants(api)


async def _fill(t: Tenants, who: str, queue_name: str) -> None:
    """DEPTH creates, then the monitor's count (as its loop does every refresh): a refusal
    rests on a real count, and without it one made during the fill may be fresher than
    RECOUNT_MIN_S, so the next create would pass it (the bounded overshoot)."""
    for _ in range(DEPTH):
        await t.create(who, queue_name)
    await t.api.state.monitor.refresh_once(force_count=True)


async def _waiting(t: Tenants, queue_name: str) -> int:
    rows = await t.api.sql("SELECT count(*) FROM jobs WHERE queue = %s AND status = 'new'",
                           queue_name)
    return int(rows[0][0])


def _full(r: Any, *fields: str) -> None:
    """429 queue_full naming one of `fields` (default: queue). A create of a token whose
    every queue is full is refused by the door (field queue) when the last count is
    recent, else by the route after a fresh count (bulk: the item's field)."""
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "queue_full" and error["field"] in (fields or ("queue",)), error
    assert int(r.headers["retry-after"]) >= 1


async def test_a_full_queue_refuses_its_own_creates_only(shallow: Tenants) -> None:
    t = shallow
    await _fill(t, "A", "a")
    r = await t.call("A", "POST", "/jobs", json={"name": "one too many", "queue": "a"})
    _full(r)
    assert "'a'" in r.json()["error"]["message"]
    _full(await t.call("A", "POST", "/jobs/bulk", json=[{"name": "x", "queue": "a"}]),
          "queue", "[0].queue")
    # B's queues are not A's: B's creates pass, single and bulk, past the global count
    # (A's 5 + B's 5 + 2 = 12 jobs waiting with MAX_QUEUE_DEPTH=5)
    await _fill(t, "B", "b")
    r = await t.call("B", "POST", "/jobs/bulk?atomic=true",
                     json=[{"name": "s1", "queue": "shared"}, {"name": "s2", "queue": "shared"}])
    assert r.status_code == 201 and r.json()["created"] == 2, r.text
    assert [await _waiting(t, q) for q in ("a", "b", "shared")] == [DEPTH, DEPTH, 2]
    # ... until B's own queue is full in turn
    _full(await t.call("B", "POST", "/jobs", json={"name": "b6", "queue": "b"}))
    assert (await t.call("B", "POST", "/jobs", json={"name": "s3", "queue": "shared"})
            ).status_code == 201


async def test_another_tenants_full_queue_is_not_revealed(shallow: Tenants) -> None:
    """B naming A's (full) queue gets the scope's answer, as for any queue it may not use."""
    t = shallow
    await _fill(t, "A", "a")
    r = await t.call("B", "POST", "/jobs", json={"name": "x", "queue": "a"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
    r = await t.call("B", "POST", "/jobs/bulk", json=[{"name": "x", "queue": "a"}])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_items", r.text
    assert "may not use" in r.json()["errors"][0]["message"]


async def test_a_full_queue_is_not_revealed_without_a_valid_token(shallow: Tenants) -> None:
    """The door reads a create's queue while some queue is full, but for a caller without
    a valid token the answer is the route's 401, never the queue's depth."""
    t = shallow
    await _fill(t, "A", "a")
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = await t.api.client.post("/jobs", json={"name": "x", "queue": "a"}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized", r.text
    _full(await t.call("A", "POST", "/jobs", json={"name": "x", "queue": "a"}))


async def test_bulk_naming_a_full_queue(shallow: Tenants) -> None:
    """Partial: the full queue's items are refused per item (field queue), the others
    written. Atomic: nothing written, 429 when only full queues refused items, 422 when
    an item is also invalid."""
    t = shallow
    await _fill(t, "A", "a")
    items = [{"name": "a1", "queue": "a"}, {"name": "b1", "queue": "b"},
             {"name": "a2", "queue": "a"}]
    r = await t.call("admin", "POST", "/jobs/bulk", json=items)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 1 and len(body["ids"]) == 1
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(0, "queue"), (2, "queue")]
    assert "full" in body["errors"][0]["message"]
    assert await _waiting(t, "b") == 1

    r = await t.call("admin", "POST", "/jobs/bulk?atomic=true", json=items)
    _full(r, "[0].queue")
    assert r.json()["created"] == 0 and r.json()["ids"] == []
    assert [e["index"] for e in r.json()["errors"]] == [0, 2]
    assert await _waiting(t, "b") == 1  # nothing of the atomic upload was written

    r = await t.call("admin", "POST", "/jobs/bulk?atomic=true",
                     json=[*items, {"name": "bad", "queue": "b", "priority": 99}])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_items", r.text
    assert await _waiting(t, "b") == 1

    r = await t.call("admin", "POST", "/jobs/bulk", json=[items[0], items[2]])
    _full(r, "[0].queue")  # partial, but no item could be written: retry later
    assert await _waiting(t, "a") == DEPTH


async def test_retry_counts_against_its_own_queue(shallow: Tenants) -> None:
    t = shallow
    dead_a = await t.dead_letter("A", "a")
    dead_b = await t.dead_letter("B", "b")
    await _fill(t, "A", "a")
    _full(await t.call("A", "POST", f"/jobs/{dead_a}/retry"))
    assert await t.status(dead_a) == "failed"
    r = await t.call("B", "POST", f"/jobs/{dead_b}/retry")
    assert r.status_code == 200 and r.json()["status"] == "new", r.text
    # A's job answers B's retry as a job that does not exist, full queue or not
    r = await t.call("B", "POST", f"/jobs/{dead_a}/retry")
    assert r.status_code == 404, r.text


async def test_a_drained_queue_admits_again(shallow: Tenants) -> None:
    """The refusal is confirmed by a fresh count of that queue: once A's jobs left `new`,
    A's next create is admitted, whatever the cached figure said."""
    t = shallow
    await _fill(t, "A", "a")
    _full(await t.call("A", "POST", "/jobs", json={"name": "full", "queue": "a"}))
    await t.api.sql("UPDATE jobs SET status = 'cancelled', finished_at = now() "
                    "WHERE queue = 'a'")
    monitor = t.api.state.monitor
    monitor.depths.recounted("a", DEPTH)  # as stale as can be: says full, counted now
    monitor.depths.counted_at = monitor.depths._confirmed_at["a"] = 0.0  # ... long ago
    assert (await t.call("A", "POST", "/jobs", json={"name": "again", "queue": "a"})
            ).status_code == 201
    assert monitor.depths.of("a") == 1


async def test_an_upload_into_full_queues_only_takes_no_connection(shallow: Tenants) -> None:
    """Every item names a full queue: refused from the items' `queue` alone, before any
    connection is taken (every one is held here: anything that needed one would be a 503
    busy). An upload with one item elsewhere still needs the database."""
    t = shallow
    await _fill(t, "A", "a")
    pool = t.api.state.pool.pool
    held = [await pool.getconn() for _ in range(t.api.state.pool.size)]
    try:
        for atomic in ("false", "true"):
            r = await t.call("admin", "POST", f"/jobs/bulk?atomic={atomic}",
                             json=[{"name": "x", "queue": "a"}, {"name": "y", "queue": "a"}])
            _full(r, "[0].queue")
            assert [e["field"] for e in r.json()["errors"]] == ["queue", "queue"]
        r = await t.call("admin", "POST", "/jobs/bulk",
                         json=[{"name": "x", "queue": "a"}, {"name": "y", "queue": "b"}])
        assert r.status_code == 503 and r.json()["error"]["code"] == "busy", r.text
    finally:
        for conn in held:
            await pool.putconn(conn)
    assert await _waiting(t, "a") == DEPTH and await _waiting(t, "b") == 0


async def test_a_counted_full_queue_is_refused_without_a_query(db_url: str) -> None:
    """While a real count that reached the limit stands (two refreshes; an hour here), a
    create into that queue is refused on it: no recount, no connection (every one is
    held: a query would wait for one and time out). Single and bulk, admin and tenant."""
    options = dataclasses.replace(TEST_OPTIONS, depth_refresh_s=3600.0)
    async with running_api(db_url, tenant_settings(MAX_QUEUE_DEPTH=DEPTH), options) as api:
        t = Tenants(api)
        await _fill(t, "A", "a")
        # a second old: past RECOUNT_MIN_S, so only the standing count avoids a recount
        api.state.monitor.depths.counted_at -= 1.0
        pool = api.state.pool.pool
        timeouts = pool.get_stats().get("requests_errors", 0)
        held = [await pool.getconn() for _ in range(api.state.pool.size)]
        try:
            for who in ("A", "admin"):
                _full(await t.call(who, "POST", "/jobs", json={"name": "x", "queue": "a"}))
                _full(await t.call(who, "POST", "/jobs/bulk", json=[{"name": "y", "queue": "a"}]),
                      "queue", "[0].queue")
        finally:
            for conn in held:
                await pool.putconn(conn)
        assert pool.get_stats().get("requests_errors", 0) == timeouts  # nothing waited
        assert await _waiting(t, "a") == DEPTH
