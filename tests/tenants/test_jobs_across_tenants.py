"""Every job endpoint, each direction between two tenants, and the admin tokens.

A job of another queue answers exactly as a job that does not exist (the bodies are
compared byte for byte, the id aside); creates into another queue are a 403 naming the
field `queue`; lists hold the caller's queues only."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.api.conftest import TEST_OPTIONS, running_api
from tests.helpers import wait_until
from tests.tenants.conftest import QUEUES_OF, Tenants, same_apart_from, tenant_settings

MISSING = 987_654_321
PAIRS = [("A", "B", "b"), ("B", "A", "a")]  # (caller, owner, owner's queue)


async def test_reads_and_writes_need_a_token_once_a_scoped_token_exists(tenants: Tenants
                                                                        ) -> None:
    job = await tenants.create("admin", "a")
    for who, token in (("nobody", None), ("A", "wrong")):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        for method, path in (("GET", "/jobs"), ("GET", f"/jobs/{job['id']}"),
                             ("GET", "/stats"), ("GET", "/metrics"), ("GET", "/modules"),
                             ("POST", "/jobs"), ("POST", "/jobs/bulk"),
                             ("POST", f"/jobs/{job['id']}/cancel"),
                             ("POST", f"/jobs/{job['id']}/retry")):
            r = await tenants.api.client.request(method, path, headers=headers,
                                                 json={"name": "x", "queue": "a"})
            assert r.status_code == 401, (who, method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await tenants.api.client.get(path)).status_code == 200, path
    assert await tenants.status(job["id"]) == "new"


@pytest.mark.parametrize(("who", "queue", "allowed"), [
    ("A", "a", True), ("A", "b", False), ("A", "shared", False), ("A", "default", False),
    ("B", "b", True), ("B", "shared", True), ("B", "a", False),
    ("ops", "a", True), ("admin", "b", True), ("admin", "default", True)])
async def test_create_only_into_the_tokens_queues(tenants: Tenants, who: str, queue: str,
                                                  allowed: bool) -> None:
    r = await tenants.call(who, "POST", "/jobs", json={"name": "x", "queue": queue})
    if allowed:
        assert r.status_code == 201, r.text
        assert r.json()["queue"] == queue
    else:
        assert r.status_code == 403, r.text
        assert r.json() == {"error": {"code": "forbidden", "field": "queue",
                                      "message": f"this token may not use queue {queue!r}"}}
        assert await tenants.api.count_jobs() == 0
    # no queue given: the default queue, which neither tenant may use
    if who in ("A", "B"):
        r = await tenants.call(who, "POST", "/jobs", json={"name": "x"})
        assert r.status_code == 403 and r.json()["error"]["field"] == "queue"


@pytest.mark.parametrize(("caller", "owner", "queue"), PAIRS)
async def test_another_queues_job_is_a_missing_job(tenants: Tenants, caller: str, owner: str,
                                                   queue: str) -> None:
    job = await tenants.create(owner, queue)
    mine = await tenants.create(caller, next(iter(QUEUES_OF[caller])))
    foreign_id = job["id"]
    for method, suffix in (("GET", ""), ("POST", "/cancel"), ("POST", "/retry")):
        foreign = await tenants.call(caller, method, f"/jobs/{foreign_id}{suffix}")
        missing = await tenants.call(caller, method, f"/jobs/{MISSING}{suffix}")
        assert foreign.status_code == 404, (suffix, foreign.text)
        assert same_apart_from(foreign, missing, foreign_id, MISSING), (foreign.text,
                                                                        missing.text)
    # what the caller can do to its own job, and the owner and the admins to this one
    assert (await tenants.call(caller, "GET", f"/jobs/{mine['id']}")).status_code == 200
    for who in (owner, "admin", "ops"):
        r = await tenants.call(who, "GET", f"/jobs/{foreign_id}")
        assert r.status_code == 200 and r.json()["queue"] == queue, (who, r.text)
    assert await tenants.status(foreign_id) == "new"
    r = await tenants.call(owner, "POST", f"/jobs/{foreign_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"


@pytest.mark.parametrize(("caller", "owner", "queue"), PAIRS)
async def test_finished_jobs_of_another_queue_are_missing_too(tenants: Tenants, caller: str,
                                                              owner: str, queue: str) -> None:
    """A 409 (cannot cancel a failed job, cannot retry a new one) would confirm that the
    job exists: another queue's job is a 404 whatever its state."""
    dead = await tenants.dead_letter(owner, queue)
    waiting = await tenants.create(owner, queue)
    cancelled = await tenants.create(owner, queue)
    await tenants.call(owner, "POST", f"/jobs/{cancelled['id']}/cancel")
    for job_id, action in ((dead, "cancel"), (waiting["id"], "retry"),
                           (cancelled["id"], "cancel"), (cancelled["id"], "retry"),
                           (dead, "retry")):
        r = await tenants.call(caller, "POST", f"/jobs/{job_id}/{action}")
        missing = await tenants.call(caller, "POST", f"/jobs/{MISSING}/{action}")
        assert r.status_code == 404 and same_apart_from(r, missing, job_id, MISSING), r.text
    assert await tenants.status(dead) == "failed"
    assert await tenants.status(waiting["id"]) == "new"
    # the owner can: its own 409 and its own retry
    r = await tenants.call(owner, "POST", f"/jobs/{dead}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    r = await tenants.call(owner, "POST", f"/jobs/{dead}/retry")
    assert r.status_code == 200 and r.json()["status"] == "new"


async def test_admin_tokens_reach_every_queue(tenants: Tenants) -> None:
    for who in ("admin", "ops"):
        for queue in ("a", "b", "default"):
            job = await tenants.create("admin", queue)
            r = await tenants.call(who, "POST", f"/jobs/{job['id']}/cancel")
            assert r.status_code == 200, (who, queue, r.text)
            dead = await tenants.dead_letter("admin", queue)
            r = await tenants.call(who, "POST", f"/jobs/{dead}/retry")
            assert r.status_code == 200 and r.json()["status"] == "new", (who, queue, r.text)
            await tenants.call(who, "POST", f"/jobs/{dead}/cancel")  # out of the next's way


async def test_lists_hold_the_callers_queues_only(tenants: Tenants) -> None:
    made: dict[str, set[int]] = {"a": set(), "b": set(), "shared": set(), "default": set()}
    for i in range(4):
        made["a"].add((await tenants.create("A", "a", kind="noop"))["id"])
        made["b"].add((await tenants.create("B", "b"))["id"])
        made["shared"].add((await tenants.create("B", "shared"))["id"])
        made["default"].add((await tenants.create("admin", "default"))["id"])
        if i % 2:
            for queue in ("a", "b"):
                made[queue].add(await tenants.dead_letter("admin", queue))

    async def listed(who: str, query: str = "") -> list[dict[str, object]]:
        r = await tenants.call(who, "GET", f"/jobs?limit=500{query}")
        assert r.status_code == 200, r.text
        assert r.json()["next_cursor"] is None
        jobs: list[dict[str, object]] = r.json()["jobs"]
        return jobs

    assert {j["id"] for j in await listed("A")} == made["a"]
    assert {j["id"] for j in await listed("B")} == made["b"] | made["shared"]
    everything = set().union(*made.values())
    assert {j["id"] for j in await listed("admin")} == everything
    assert {j["id"] for j in await listed("ops")} == everything
    # filters within the scope
    assert {j["id"] for j in await listed("B", "&queue=shared")} == made["shared"]
    failed = await listed("A", "&status=failed")
    assert {j["queue"] for j in failed} == {"a"} and len(failed) == 2
    assert {j["id"] for j in await listed("A", "&kind=noop")} == made["a"]
    # a queue outside the scope is not found, whether it exists or not
    for who, queue in (("A", "b"), ("A", "shared"), ("B", "a"), ("A", "nosuchqueue"),
                       ("B", "default")):
        r = await tenants.call(who, "GET", f"/jobs?queue={queue}")
        assert r.status_code == 404, (who, queue, r.text)
        assert r.json() == {"error": {"code": "not_found", "field": "queue",
                                      "message": f"queue {queue!r} not found"}}
    assert (await tenants.call("A", "GET", "/jobs?queue=a-empty")).status_code == 404
    assert (await tenants.call("admin", "GET", "/jobs?queue=nosuchqueue")).json() == {
        "jobs": [], "next_cursor": None}


async def test_a_scoped_list_reads_a_bounded_window_and_pages_through(db_url: str) -> None:
    """A's jobs are older than 30 of B's: A's pages read at most list_scan_max rows each
    (short or empty pages with a cursor), and walking the cursor finds all of A's jobs
    and nothing else."""
    options = replace(TEST_OPTIONS, list_scan_max=8)
    async with running_api(db_url, tenant_settings(), options) as api:
        tenants = Tenants(api)
        mine = [(await tenants.create("A", "a"))["id"] for _ in range(5)]
        for _ in range(30):
            await tenants.create("B", "b")
        seen: list[int] = []
        pages = 0
        cursor = ""
        while True:
            r = await tenants.call("A", "GET", f"/jobs?limit=3{cursor}")
            assert r.status_code == 200, r.text
            page = r.json()
            pages += 1
            assert len(page["jobs"]) <= 3
            seen += [job["id"] for job in page["jobs"]]
            assert all(job["queue"] == "a" for job in page["jobs"])
            if page["next_cursor"] is None:
                break
            cursor = f"&cursor={page['next_cursor']}"
            assert pages < 20
        assert seen == sorted(mine, reverse=True)
        assert pages >= 35 // 8  # the window, not the page size, bounded the reads


async def test_bulk_items_for_other_queues_are_invalid_items(tenants: Tenants) -> None:
    items = [{"name": "ok-1", "queue": "a"}, {"name": "no", "queue": "b"},
             {"name": "ok-2", "queue": "a"}, {"name": "no-default"}]
    r = await tenants.call("A", "POST", "/jobs/bulk", json=items)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 2 and len(body["ids"]) == 2
    assert body["errors"] == [
        {"index": 1, "field": "queue", "message": "this token may not use queue 'b'"},
        {"index": 3, "field": "queue", "message": "this token may not use queue 'default'"}]
    rows = await tenants.api.sql("SELECT queue FROM jobs ORDER BY id")
    assert rows == [("a",), ("a",)]
    r = await tenants.call("A", "POST", "/jobs/bulk?atomic=true", json=items)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_items" and r.json()["created"] == 0
    assert [e["index"] for e in r.json()["errors"]] == [1, 3]
    assert await tenants.api.count_jobs() == 2
    r = await tenants.call("B", "POST", "/jobs/bulk", json=[{"name": "x", "queue": "a"}])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "queue"
    r = await tenants.call("admin", "POST", "/jobs/bulk", json=items)
    assert r.status_code == 201 and r.json()["created"] == 4


async def test_stats_count_the_callers_queues_only(tenants: Tenants) -> None:
    expected = {
        "A": {"new": 3, "scheduled": 1, "processing": 1, "cancelled": 1, "failed": 1},
        "B": {"new": 3, "scheduled": 2, "processing": 0, "cancelled": 2, "failed": 2},
        "default": {"new": 1, "scheduled": 0, "processing": 0, "cancelled": 0, "failed": 0},
    }
    for _ in range(4):
        await tenants.create("A", "a")
    await tenants.claim("a")  # one of A's stays processing
    await tenants.create("A", "a", delay=3600)
    cancel = await tenants.create("A", "a")
    await tenants.call("A", "POST", f"/jobs/{cancel['id']}/cancel")
    await tenants.dead_letter("A", "a")
    # B's waiting jobs have waited an hour: its oldest_waiting_age_s is not A's
    for queue in ("b", "b", "shared"):
        await tenants.create("B", queue, run_at=await _an_hour_ago(tenants))
    for queue in ("b", "shared"):
        await tenants.create("B", queue, delay=3600)
        cancel = await tenants.create("B", queue)
        await tenants.call("B", "POST", f"/jobs/{cancel['id']}/cancel")
    await tenants.dead_letter("B", "b")
    await tenants.dead_letter("B", "shared")
    await tenants.create("admin", "default")

    async def stats(who: str) -> dict[str, object]:
        r = await tenants.call(who, "GET", "/stats")
        assert r.status_code == 200, r.text
        body: dict[str, object] = r.json()
        return body

    # dead letters count in finished_last_minute once their second has passed
    async def settled() -> bool:
        return (await stats("admin"))["finished_last_minute"] == 3

    await wait_until(settled, within=30, what="the dead letters' second to pass")
    for who, own in (("A", [expected["A"]]), ("B", [expected["B"]]),
                     ("admin", list(expected.values())), ("ops", list(expected.values()))):
        body = await stats(who)
        counts = body["counts"]
        assert isinstance(counts, dict)
        for state in ("new", "scheduled", "processing", "cancelled", "failed"):
            assert counts[state] == sum(e[state] for e in own), (who, state, body)
        assert counts["success"] == 0 and counts["blocked"] == 0
        assert body["waiting"] == counts["new"] and body["in_flight"] == counts["processing"]
        assert body["finished_last_minute"] == sum(e["failed"] for e in own), (who, body)
    age_a, age_b = (await stats("A"))["oldest_waiting_age_s"], (await stats("B"))[
        "oldest_waiting_age_s"]
    assert isinstance(age_a, float) and isinstance(age_b, float)
    assert age_a < 600 and age_b >= 3600


async def _an_hour_ago(tenants: Tenants) -> str:
    rows = await tenants.api.sql("SELECT to_char((now() - interval '1 hour') AT TIME ZONE "
                                 "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    return str(rows[0][0])


async def test_metrics_and_modules_are_for_admin_tokens(tenants: Tenants) -> None:
    for who in ("A", "B"):
        for method, path in (("GET", "/metrics"), ("GET", "/modules"), ("GET", "/modules/m"),
                             ("PUT", "/modules/m"), ("DELETE", "/modules/m")):
            r = await tenants.call(who, method, path, content=b"\0asm",
                                   headers={"Content-Type": "application/wasm"})
            assert r.status_code == 403, (who, method, path, r.text)
            assert r.json()["error"]["code"] == "forbidden"
    for who in ("admin", "ops"):
        assert (await tenants.call(who, "GET", "/metrics")).status_code == 200
        r = await tenants.call(who, "GET", "/modules")
        assert r.status_code == 200 and r.json() == {"modules": []}
        assert (await tenants.call(who, "GET", "/modules/m")).status_code == 404


async def test_openapi_declares_the_token_on_reads_and_the_403s(tenants: Tenants) -> None:
    doc = (await tenants.api.client.get("/openapi.json")).json()
    paths = doc["paths"]
    for path, method in (("/jobs", "get"), ("/jobs/{job_id}", "get"), ("/stats", "get"),
                         ("/jobs", "post"), ("/modules", "get"), ("/metrics", "get")):
        assert paths[path][method]["security"] == [{"bearer": []}], (path, method)
    assert "403" in paths["/jobs"]["post"]["responses"]
    assert "404" in paths["/jobs"]["get"]["responses"]
    assert "403" in paths["/metrics"]["get"]["responses"]
    assert "403" in paths["/modules/{name}"]["put"]["responses"]
    assert "security" not in paths["/healthz"]["get"]
