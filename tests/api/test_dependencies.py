"""Dependencies between jobs (migration 0008, docs/workflows.md) over real HTTP against a
real PostgreSQL: a job created with depends_on (or depends_on_index in a bulk upload) is
`blocked` until every parent reached success, in the parent's own transaction; a parent
that fails or is cancelled cancels its blocked descendants."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest

from boundq.core import queue
from boundq.core.handlers import JobContext, Registry, register_builtins
from boundq.core.states import AttemptOutcome
from boundq.core.worker import Worker
from tests.api.conftest import Api
from tests.conftest import fast_settings

OWNER = "deps-test"


async def create(api: Api, **fields: Any) -> dict[str, Any]:
    r = await api.client.post("/jobs", json={"name": "job", **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def row(api: Api, job_id: int) -> dict[str, Any]:
    r = await api.client.get(f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def statuses(api: Api, *ids: int) -> list[str]:
    return [(await row(api, i))["status"] for i in ids]


async def finish(api: Api, job_id: int, *, ok: bool = True) -> None:
    """Claim `job_id` (it must be the first runnable job) and end it as a worker does."""
    async with await psycopg.AsyncConnection.connect(api.db_url, autocommit=True) as conn:
        (claimed,) = await queue.claim(conn, OWNER, 1, 30.0)
        assert claimed.id == job_id
        if ok:
            assert await queue.complete_batch(conn, OWNER, [(job_id, claimed.attempt)]) == {
                job_id}
        else:
            assert await queue.fail_batch(conn, OWNER, [queue.Outcome(
                job_id, claimed.attempt, AttemptOutcome.ERROR, "boom", retryable=False)],
                0.0, 0.0) == {job_id: "failed"}


async def test_create_with_depends_on_is_blocked_until_every_parent_succeeded(api: Api) -> None:
    a, b = (await create(api, name="a"))["id"], (await create(api, name="b"))["id"]
    child = await create(api, name="child", depends_on=[a, b, a])  # duplicates count once
    assert (child["status"], child["blocked_by"]) == ("blocked", 2)
    assert (await row(api, a))["has_dependants"] is True
    await finish(api, a)
    assert (await row(api, child["id"]))["status"] == "blocked"
    assert (await row(api, child["id"]))["blocked_by"] == 1
    await finish(api, b)
    after = await row(api, child["id"])
    assert (after["status"], after["blocked_by"]) == ("new", 0)
    stats = (await api.client.get("/stats")).json()
    assert stats["counts"]["blocked"] == 0 and stats["counts"]["new"] == 1


async def test_a_delayed_child_becomes_scheduled(api: Api) -> None:
    parent = (await create(api, name="p"))["id"]
    child = await create(api, name="c", depends_on=[parent], delay=3600)
    assert child["status"] == "blocked"
    assert (await api.client.get("/stats")).json()["counts"]["blocked"] == 1
    await finish(api, parent)
    assert await statuses(api, child["id"]) == ["scheduled"]


async def test_a_real_worker_runs_the_child_after_the_parent(api: Api) -> None:
    started: list[int] = []
    child_ran = asyncio.Event()
    child_id = 0

    async def step(ctx: JobContext) -> None:
        started.append(ctx.id)
        if ctx.id == child_id:
            child_ran.set()

    registry = Registry()
    register_builtins(registry)
    registry.register("noop", step)  # the worker's noop records the order
    parent = (await create(api, name="p"))["id"]
    child_id = (await create(api, name="c", depends_on=[parent]))["id"]
    worker = Worker(fast_settings(max_concurrent_jobs=4), api.db_url, registry=registry)
    await worker.start()
    try:
        await asyncio.wait_for(child_ran.wait(), 20)
    finally:
        await worker.stop()
    assert started == [parent, child_id]
    p, c = await row(api, parent), await row(api, child_id)
    assert c["attempt_history"][0]["claimed_at"] >= p["finished_at"]
    assert (p["status"], c["status"]) == ("success", "success")


async def test_bulk_with_depends_on_index(api: Api) -> None:
    items = [{"name": "child", "depends_on_index": [2]},            # a later item
             {"name": "grandchild", "depends_on_index": [0, 2]},
             {"name": "parent"}]
    r = await api.client.post("/jobs/bulk", json=items)
    assert r.status_code == 201, r.text
    child, grandchild, parent = r.json()["ids"]
    assert await statuses(api, child, grandchild, parent) == ["blocked", "blocked", "new"]
    assert (await row(api, grandchild))["blocked_by"] == 2
    await finish(api, parent)
    assert await statuses(api, child, grandchild) == ["new", "blocked"]
    await finish(api, child)
    assert await statuses(api, grandchild) == ["new"]


async def test_failure_cancels_blocked_descendants_transitively(api: Api) -> None:
    parent = (await create(api, name="p"))["id"]
    child = (await create(api, name="c", depends_on=[parent]))["id"]
    grandchild = (await create(api, name="g", depends_on=[child]))["id"]
    other = (await create(api, name="o"))["id"]
    await finish(api, parent, ok=False)
    c, g = await row(api, child), await row(api, grandchild)
    assert (c["status"], c["last_error"]) == ("cancelled", f"dependency {parent} ended failed")
    assert (g["status"], g["last_error"]) == (
        "cancelled", f"dependency {child} ended cancelled (dependency {parent} ended failed)")
    assert c["finished_at"] is not None and c["attempt_history"] == []
    assert await statuses(api, other) == ["new"]
    assert (await api.client.get("/stats")).json()["counts"]["cancelled"] == 2
    assert (await api.client.post(f"/jobs/{other}/cancel")).status_code == 200
    # A retry of the parent does not revive them.
    assert (await api.client.post(f"/jobs/{parent}/retry")).status_code == 200
    await finish(api, parent)  # the retried parent (priority and age put it first)
    assert await statuses(api, child, grandchild) == ["cancelled", "cancelled"]


async def test_cancel_of_a_blocked_job_cascades(api: Api) -> None:
    parent = (await create(api, name="p"))["id"]
    child = (await create(api, name="c", depends_on=[parent]))["id"]
    grandchild = (await create(api, name="g", depends_on=[child, parent]))["id"]
    r = await api.client.post(f"/jobs/{child}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    g = await row(api, grandchild)
    assert (g["status"], g["last_error"]) == ("cancelled", f"dependency {child} ended cancelled")
    await finish(api, parent)
    assert await statuses(api, child, grandchild) == ["cancelled", "cancelled"]


async def test_parents_that_finished_before_the_create(api: Api) -> None:
    done = (await create(api, name="done"))["id"]
    await finish(api, done)
    failed = (await create(api, name="failed"))["id"]
    await finish(api, failed, ok=False)
    dropped = (await create(api, name="x"))["id"]
    assert (await api.client.post(f"/jobs/{dropped}/cancel")).status_code == 200
    assert (await create(api, name="c1", depends_on=[done]))["status"] == "new"
    for parent, how in ((failed, "failed"), (dropped, "cancelled")):
        child = await create(api, name="c2", depends_on=[done, parent])
        assert (child["status"], child["last_error"]) == (
            "cancelled", f"dependency {parent} ended {how}")
        assert child["finished_at"] is not None
    # in a bulk upload too, and what depends on such an item inside the upload
    r = await api.client.post("/jobs/bulk", json=[{"name": "b0", "depends_on": [failed]},
                                                  {"name": "b1", "depends_on_index": [0]}])
    assert r.status_code == 201, r.text
    assert await statuses(api, *r.json()["ids"]) == ["cancelled", "cancelled"]


@pytest.mark.parametrize(("fields", "field"), [
    ({"depends_on": list(range(1, 102))}, "depends_on"),
    ({"depends_on": ["1"]}, "depends_on"),
    ({"depends_on": [1.5]}, "depends_on"),
    ({"depends_on": [True]}, "depends_on"),
    ({"depends_on": [0]}, "depends_on"),
    ({"depends_on": 1}, "depends_on"),
    ({"depends_on": [2**63]}, "depends_on"),
    ({"depends_on": [424242]}, "depends_on"),
    ({"depends_on": "PARENT", "dedupe_key": "k"}, "depends_on"),
    ({"depends_on_index": [0]}, "depends_on_index"),
])
async def test_bad_depends_on_is_422_naming_the_field(api: Api, fields: dict[str, Any],
                                                      field: str) -> None:
    parent = (await create(api, name="p"))["id"]
    if fields.get("depends_on") == "PARENT":
        fields = {**fields, "depends_on": [parent]}
    before = await api.count_jobs()
    r = await api.client.post("/jobs", json={"name": "c", **fields})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert await api.count_jobs() == before
    assert (await row(api, parent))["has_dependants"] is False


async def test_bulk_bad_indexes(api: Api) -> None:
    items: list[Any] = [
        {"name": "ok"},                                        # 0
        {"name": "self", "depends_on_index": [1]},             # 1
        {"name": "beyond", "depends_on_index": [99]},          # 2
        {"name": "cycle-a", "depends_on_index": [4]},          # 3
        {"name": "cycle-b", "depends_on_index": [3]},          # 4
        {"name": "on-invalid", "depends_on_index": [6]},       # 5 (6 is invalid)
        {"name": "bad", "priority": 99},                       # 6
        {"name": "on-keyed", "depends_on_index": [8]},         # 7
        {"name": "keyed", "dedupe_key": "k"},                  # 8
        {"name": "missing", "depends_on": [424242]},           # 9
        {"name": "negative", "depends_on_index": [-1]},        # 10
        {"name": "fine", "depends_on_index": [0]},             # 11
    ]
    r = await api.client.post("/jobs/bulk", json=items)
    assert r.status_code == 201, r.text
    body = r.json()
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "depends_on_index"), (2, "depends_on_index"), (3, "depends_on_index"),
        (4, "depends_on_index"), (5, "depends_on_index"), (6, "priority"),
        (7, "depends_on_index"), (9, "depends_on"), (10, "depends_on_index")]
    assert body["created"] == 3
    assert "cycle" in body["errors"][2]["message"]
    assert body["errors"][7]["message"] == "job 424242 not found"
    ok, keyed, fine = body["ids"]
    assert await statuses(api, ok, keyed, fine) == ["new", "new", "blocked"]
    r = await api.client.post("/jobs/bulk?atomic=true", json=items)
    assert r.status_code == 422 and r.json()["error"]["field"] == "[1].depends_on_index"
    assert await api.count_jobs() == 3


async def test_parent_completing_while_the_child_is_created_never_leaves_it_blocked(
        api: Api) -> None:
    """The create locks its parents: either the completion commits first (the create
    sees a success) or it waits for the create and then finds the link."""
    async with await psycopg.AsyncConnection.connect(api.db_url, autocommit=True) as conn:
        for round_ in range(15):
            parent = (await create(api, name=f"p{round_}"))["id"]
            (claimed,) = await queue.claim(conn, OWNER, 1, 30.0)
            assert claimed.id == parent
            completed, created = await asyncio.gather(
                queue.complete_batch(conn, OWNER, [(parent, claimed.attempt)]),
                create(api, name=f"c{round_}", depends_on=[parent]))
            assert completed == {parent}
            child = await row(api, created["id"])
            assert (child["status"], child["blocked_by"]) == ("new", 0), (round_, child)
            assert (await queue.cancel(conn, child["id"]))["status"] == "cancelled"


async def test_the_unblock_reads_children_by_index(api: Api) -> None:
    """The trigger's statements, as PostgreSQL runs them inside the completion (auto_explain
    of nested statements): children are found through job_dependencies_parent_idx, with
    thousands of unrelated dependency rows in the table."""
    others = (await create(api, name="many-parents"))["id"]
    r = await api.client.post("/jobs/bulk", json=[{"name": f"w{i}", "depends_on": [others]}
                                                  for i in range(3000)])
    assert r.status_code == 201
    parent = (await create(api, name="p", priority=9))["id"]
    child = (await create(api, name="c", depends_on=[parent]))["id"]
    plans: list[str] = []
    async with await psycopg.AsyncConnection.connect(api.db_url, autocommit=True) as conn:
        await conn.execute("ANALYZE jobs")
        await conn.execute("ANALYZE job_dependencies")
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                        "SET auto_explain.log_nested_statements = on",
                        "SET auto_explain.log_level = 'notice'",
                        "SET client_min_messages = 'notice'"):
            await conn.execute(setting)
        await finish_on(conn, parent)
    assert await statuses(api, child) == ["new"]
    unblock = [p for p in plans if "job_dependencies" in p and "blocked_by" in p]
    assert unblock, plans
    assert "job_dependencies_parent_idx" in unblock[0], unblock[0]
    assert "Seq Scan" not in unblock[0], unblock[0]


async def finish_on(conn: psycopg.AsyncConnection[Any], job_id: int) -> None:
    (claimed,) = await queue.claim(conn, OWNER, 1, 30.0)
    assert claimed.id == job_id
    assert await queue.complete_batch(conn, OWNER, [(job_id, claimed.attempt)]) == {job_id}


async def _lock_waiters(api: Api) -> int:
    rows = await api.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                         "AND datname = current_database()")
    return int(rows[0][0])


P1, P2 = 1, 2  # the parents, the first two jobs of the test's database


def _create_request(api: Api, via: str) -> Any:
    if via == "single":
        return api.client.post("/jobs", json={"name": "child", "depends_on": [P1, P2]})
    return api.client.post("/jobs/bulk?atomic=true", json=[
        {"name": "child", "depends_on": [P1, P2]},
        {"name": "grandchild", "depends_on_index": [0]}])


async def _create_as_deadlock_victim(api: Api, via: str) -> httpx.Response:
    """A create locks its parents in id order; a transaction holding the second parent and
    then asking for the first (as a worker's batch finishing both in another order does)
    closes a cycle. PostgreSQL rolls back the waiter whose deadlock check runs first: the
    create (deadlock_timeout 1 s, the other session's 20 s). Returns the create's answer."""
    for _ in range(3):  # a busy machine can let the create's single check run too early
        async with await psycopg.AsyncConnection.connect(api.db_url) as other:
            await other.execute("SET deadlock_timeout = '20s'")
            await other.execute("SELECT 1 FROM jobs WHERE id = %s FOR NO KEY UPDATE", (P2,))
            answer = asyncio.create_task(_create_request(api, via))
            while await _lock_waiters(api) == 0:  # the create holds P1 and waits for P2
                assert not answer.done(), answer.result().text
                await asyncio.sleep(0.01)
            try:
                await other.execute("SELECT 1 FROM jobs WHERE id = %s FOR NO KEY UPDATE",
                                    (P1,))
            except psycopg.errors.DeadlockDetected:
                await other.rollback()  # this session was the victim: try again
                (await answer).raise_for_status()
                await api.sql("DELETE FROM jobs WHERE id > %s", P2)
                continue
            await other.commit()  # the create was the victim; a retry goes on now
        return await answer
    pytest.fail("the create was never the deadlock's victim in three tries")


@pytest.mark.parametrize("via", ["single", "bulk"])
async def test_a_create_chosen_as_a_deadlock_victim_is_written_once(api: Api, via: str) -> None:
    """The victim's transaction was rolled back, so the create runs again and answers as
    if nothing happened, its jobs written once."""
    assert [(await create(api))["id"] for _ in range(2)] == [P1, P2]
    r = await _create_as_deadlock_victim(api, via)
    assert r.status_code == 201, r.text
    assert await api.count_jobs() == 2 + (1 if via == "single" else 2)
    child = r.json()["id"] if via == "single" else r.json()["ids"][0]
    assert await statuses(api, child) == ["blocked"]
    links = await api.sql("SELECT count(*) FROM job_dependencies WHERE child_id = %s", child)
    assert links == [(2,)]


@pytest.mark.parametrize("via", ["single", "bulk"])
async def test_a_create_that_stays_a_deadlock_victim_is_a_503_that_wrote_nothing(
        api: Api, via: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of retries: 503 write_conflict with Retry-After, nothing written, and the API
    does not take the deadlock for a database outage."""
    monkeypatch.setattr(queue, "DEADLOCK_RETRIES", 0)
    assert [(await create(api))["id"] for _ in range(2)] == [P1, P2]
    r = await _create_as_deadlock_victim(api, via)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "write_conflict"
    assert r.headers["retry-after"] == "1"
    assert await api.count_jobs() == 2
    assert api.state.monitor.up
