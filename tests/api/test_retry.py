"""Retrying a dead letter through the API: it counts against the queue depth like a create,
and a live job holding its dedupe_key is a 409 naming the key (never a database error)."""

from __future__ import annotations

from tests.api.conftest import Api, running_api
from tests.conftest import fast_settings


async def _dead_letter(api: Api, **fields: object) -> int:
    r = await api.client.post("/jobs", json={"name": "dead", "max_attempts": 1, **fields})
    assert r.status_code == 201, r.text
    job_id = int(r.json()["id"])
    await api.sql("UPDATE jobs SET status = 'processing', attempts = 1, lease_owner = 't', "
                  "lease_expires_at = now(), started_at = now() WHERE id = %s", job_id)
    await api.sql("UPDATE jobs SET status = 'failed', lease_owner = NULL, "
                  "lease_expires_at = NULL, finished_at = now() WHERE id = %s", job_id)
    return job_id


async def test_retry_while_a_live_job_holds_the_dedupe_key_is_a_409(api: Api) -> None:
    dead = await _dead_letter(api, dedupe_key="once")
    r = await api.client.post("/jobs", json={"name": "live", "dedupe_key": "once"})
    assert r.status_code == 201, r.text  # the dead letter no longer holds the key
    live = r.json()["id"]
    r = await api.client.post(f"/jobs/{dead}/retry")
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "dedupe_key_taken" and error["field"] == "dedupe_key"
    assert "'once'" in error["message"] and r.json()["holder"] == live
    assert (await api.client.get(f"/jobs/{dead}")).json()["status"] == "failed"
    await api.client.post(f"/jobs/{live}/cancel")  # the key is free again
    r = await api.client.post(f"/jobs/{dead}/retry")
    assert r.status_code == 200 and r.json()["status"] == "new"


async def test_retry_is_refused_when_the_queue_is_full(db_url: str) -> None:
    async with running_api(db_url, fast_settings(MAX_QUEUE_DEPTH=2)) as api:
        dead = await _dead_letter(api)
        for i in range(2):
            assert (await api.client.post("/jobs", json={"name": f"w{i}"})).status_code == 201
        await api.state.monitor.refresh_once(force_count=True)
        r = await api.client.post(f"/jobs/{dead}/retry")
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"]
        assert (await api.client.get(f"/jobs/{dead}")).json()["status"] == "failed"
