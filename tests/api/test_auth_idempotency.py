"""API_TOKEN on mutating endpoints, and Idempotency-Key on creates."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from tests.api.conftest import TEST_OPTIONS, Api, running_api
from tests.conftest import fast_settings


async def test_token_guards_mutations_only(db_url: str) -> None:
    async with running_api(db_url, fast_settings(API_TOKEN="s3cret")) as api:
        good = {"Authorization": "Bearer s3cret"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic s3cret"}, {"Authorization": "Bearer s3cre"}):
            r = await api.client.post("/jobs", json={"name": "x"}, headers=headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["code"] == "unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
        for path in ("/jobs/bulk", "/jobs/1/cancel", "/jobs/1/retry"):
            assert (await api.client.post(path, json=[{"name": "x"}])).status_code == 401
        assert await api.count_jobs() == 0
        r = await api.client.post("/jobs", json={"name": "x"}, headers=good)
        assert r.status_code == 201
        job_id = r.json()["id"]
        assert (await api.client.get(f"/jobs/{job_id}")).status_code == 200
        assert (await api.client.get("/jobs")).status_code == 200
        assert (await api.client.get("/stats")).status_code == 200
        assert (await api.client.get("/metrics")).status_code == 200
        r = await api.client.post(f"/jobs/{job_id}/cancel", headers=good)
        assert r.status_code == 200
        doc = (await api.client.get("/openapi.json")).json()
        assert doc["paths"]["/jobs"]["post"]["security"] == [{"bearer": []}]
        assert "security" not in doc["paths"]["/jobs"]["get"]


async def test_token_can_guard_reads(db_url: str) -> None:
    options = replace(TEST_OPTIONS, protect_reads=True)
    async with running_api(db_url, fast_settings(API_TOKEN="t"), options) as api:
        for path in ("/jobs", "/jobs/1", "/stats", "/metrics"):
            assert (await api.client.get(path)).status_code == 401, path
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert (await api.client.get(path)).status_code == 200, path
        r = await api.client.get("/stats", headers={"Authorization": "Bearer t"})
        assert r.status_code == 200


async def test_idempotent_retry_returns_same_job(api: Api) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await api.client.post("/jobs", json={"name": "pay", "priority": 3}, headers=headers)
    assert first.status_code == 201
    # the same request again, formatted differently: the same job, 200
    again = await api.client.post("/jobs", content=b'{ "priority":3,"name":"pay" }',
                                  headers={**headers, "Content-Type": "application/json"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = await api.client.post("/jobs", json={"name": "pay", "priority": 4}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"] == {"code": "idempotency_key_reused", "field": "Idempotency-Key",
                                     "message": other.json()["error"]["message"]}
    assert await api.count_jobs() == 1
    bad = await api.client.post("/jobs", json={"name": "x"}, headers={"Idempotency-Key": "a b"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "Idempotency-Key"


async def test_concurrent_requests_with_one_key_make_one_job(api: Api) -> None:
    headers = {"Idempotency-Key": "race"}
    replies = await asyncio.gather(*(api.client.post("/jobs", json={"name": "r"},
                                                     headers=headers) for _ in range(12)))
    assert sorted(r.status_code for r in replies) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in replies}) == 1
    assert await api.count_jobs() == 1
