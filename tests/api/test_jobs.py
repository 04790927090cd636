"""Every endpoint's happy path, over real HTTP against real PostgreSQL."""

from __future__ import annotations

import asyncio

from tests.api.conftest import Api


async def test_create_seed_body(api: Api) -> None:
    r = await api.client.post("/jobs", json={"name": "Test Job", "status": "new"})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["name"] == "Test Job" and job["status"] == "new" and job["kind"] == "noop"
    assert r.headers["location"] == f"/jobs/{job['id']}"
    assert job["max_attempts"] == 5 and job["priority"] == 0 and job["attempts"] == 0


async def test_create_all_fields(api: Api) -> None:
    body = {"name": "full", "kind": "sleep", "payload": {"ms": 5}, "priority": 7,
            "delay": 30, "max_attempts": 3, "timeout": 2.5, "dedupe_key": "k1"}
    r = await api.client.post("/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert (job["kind"], job["payload"], job["priority"], job["max_attempts"], job["timeout_s"],
            job["dedupe_key"]) == ("sleep", {"ms": 5}, 7, 3, 2.5, "k1")
    assert job["run_at"] > job["created_at"]
    again = await api.client.post("/jobs", json=body)
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    r = await api.client.post("/jobs", json={"name": "at", "run_at": "2030-01-01T00:00:00Z"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "run_at"
    r = await api.client.post("/jobs", json={"name": "at", "run_at": job["created_at"]})
    assert r.status_code == 201, r.text


async def test_concurrent_creates_are_grouped(api: Api) -> None:
    replies = await asyncio.gather(*(api.client.post("/jobs", json={"name": f"c{i}"})
                                     for i in range(60)))
    assert all(r.status_code == 201 for r in replies)
    ids = {r.json()["id"] for r in replies}
    assert len(ids) == 60
    names = {r.json()["name"] for r in replies}
    assert names == {f"c{i}" for i in range(60)}
    for r in replies:  # each request got its own row back
        assert (await api.client.get(f"/jobs/{r.json()['id']}")).json()["name"] == r.json()["name"]
    assert await api.count_jobs() == 60


async def test_get_job_with_history(api: Api) -> None:
    job = (await api.client.post("/jobs", json={"name": "h"})).json()
    # Attempt 1 ended (its row), attempt 2 is running (only the jobs row says so).
    await api.sql("UPDATE jobs SET status='processing', attempts=2, lease_owner='t', "
                  "lease_expires_at=now()+interval '1 min', started_at=now() WHERE id=%s",
                  job["id"])
    await api.sql("INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, "
                  "outcome, error) VALUES (%s, 1, 'old', now() - interval '1 min', "
                  "now() - interval '30 s', 'lost', 'lease expired')", job["id"])
    r = await api.client.get(f"/jobs/{job['id']}")
    assert r.status_code == 200
    detail = r.json()
    assert detail["status"] == "processing"
    history = detail["attempt_history"]
    assert [(a["attempt"], a["owner"], a["outcome"], a["error"]) for a in history] == [
        (1, "old", "lost", "lease expired"), (2, "t", None, None)]
    assert history[0]["finished_at"] is not None
    assert history[1]["finished_at"] is None
    assert history[1]["claimed_at"] == detail["started_at"]
    assert (await api.client.get("/jobs/999999")).status_code == 404
    for bad in ("abc", "-1", "0", "99999999999999999999999", "9" * 5000):
        r = await api.client.get(f"/jobs/{bad}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def test_list_filters_and_pages(api: Api) -> None:
    r = await api.client.post("/jobs/bulk", json=[{"name": f"n{i}", "kind": "noop"}
                                                  for i in range(7)]
                              + [{"name": f"f{i}", "kind": "fail"} for i in range(3)])
    assert r.status_code == 201
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.client.get("/jobs", params=params)).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True) and len(seen) == 10
    fails = (await api.client.get("/jobs", params={"kind": "fail"})).json()["jobs"]
    assert {j["kind"] for j in fails} == {"fail"} and len(fails) == 3
    new = (await api.client.get("/jobs", params={"status": "new", "limit": 500})).json()
    assert len(new["jobs"]) == 10 and new["next_cursor"] is None
    r = await api.client.get("/jobs", params={"limit": 501})
    assert r.status_code == 422 and r.json()["error"]["field"] == "limit"
    r = await api.client.get("/jobs", params={"status": "done"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "status"


async def test_cancel_and_retry(api: Api) -> None:
    job = (await api.client.post("/jobs", json={"name": "c"})).json()
    r = await api.client.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = await api.client.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"
    r = await api.client.post(f"/jobs/{job['id']}/retry")
    assert r.status_code == 409
    failed = (await api.client.post("/jobs", json={"name": "f", "max_attempts": 1})).json()
    await api.sql("UPDATE jobs SET status='processing', attempts=1, lease_owner='t', "
                  "lease_expires_at=now(), started_at=now() WHERE id=%s", failed["id"])
    await api.sql("UPDATE jobs SET status='failed', finished_at=now(), lease_owner=NULL, "
                  "lease_expires_at=NULL WHERE id=%s", failed["id"])
    r = await api.client.post(f"/jobs/{failed['id']}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "new" and r.json()["max_attempts"] == 2
    assert (await api.client.post("/jobs/424242/cancel")).status_code == 404


async def test_stats_health_ready_metrics_openapi(api: Api) -> None:
    await api.client.post("/jobs/bulk", json=[{"name": "s"}] * 4)
    stats = (await api.client.get("/stats")).json()
    assert stats["counts"]["new"] == 4 and stats["waiting"] == 4
    assert stats["oldest_waiting_age_s"] >= 0 and stats["in_flight"] == 0
    assert stats["finished_last_minute"] == 0 and stats["throughput_per_s"] == 0
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    # The API's own metrics (the workers' live in their processes: tests/api/test_serve.py;
    # counters are per process, and this test session runs many APIs, so only names here).
    for name in ('boundq_http_requests_total{method="POST",status="201"}',
                 "boundq_api_pool_pool_max 4.0", "boundq_api_database_up 1.0",
                 "boundq_api_jobs_created_total", "boundq_http_request_seconds_bucket"):
        assert name in text, name
    assert api.state.metrics.jobs_created == 4
    doc = (await api.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {"/jobs", "/jobs/bulk", "/jobs/{job_id}", "/stats"}
    assert doc["components"]["schemas"]["JobCreate"]["additionalProperties"] is False


async def test_unknown_route_and_method_are_json(api: Api) -> None:
    r = await api.client.get("/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.client.delete("/jobs")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
