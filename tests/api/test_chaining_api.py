"""Kind `echo` over real HTTP: its payload (and the follow-up in `then`) is validated at
the door, and a worker returns `value` as the result and creates `then` with the success."""

from __future__ import annotations

from boundq.core.worker import Worker
from tests.api.conftest import Api
from tests.conftest import fast_settings


async def test_echo_returns_its_value_and_chains_then(api: Api) -> None:
    body = {"name": "greet", "kind": "echo", "payload": {
        "value": {"hello": "world"},
        "then": {"name": "greet-next", "kind": "echo", "priority": 4,
                 "payload": {"value": [1, 2]}}}}
    r = await api.client.post("/jobs", json=body)
    assert r.status_code == 201, r.text
    first = r.json()["id"]
    worker = Worker(fast_settings(max_concurrent_jobs=2, num_workers=1), api.db_url)
    await worker.start()
    try:
        done = await api.client.get(f"/jobs/{first}", params={"wait": 2})
        while done.json()["status"] != "success":
            assert done.json()["status"] in ("new", "processing"), done.text
            done = await api.client.get(f"/jobs/{first}", params={"wait": 2})
        assert done.json()["result"] == {"hello": "world"}
        [(second,)] = await api.sql("SELECT id FROM jobs WHERE name = 'greet-next'")
        nxt = await api.client.get(f"/jobs/{second}", params={"wait": 2})
        while nxt.json()["status"] != "success":
            assert nxt.json()["status"] in ("new", "processing"), nxt.text
            nxt = await api.client.get(f"/jobs/{second}", params={"wait": 2})
    finally:
        await worker.stop()
    job = nxt.json()
    assert (job["kind"], job["priority"], job["result"], job["payload"]) == (
        "echo", 4, [1, 2], {"value": [1, 2]})
    assert await api.count_jobs() == 2


async def test_a_bad_then_is_refused_naming_its_field(api: Api) -> None:
    for then, field in [({"kind": "no_such_kind"}, "payload.then.kind"),
                        ({"kind": "sleep", "payload": {"ms": -1}}, "payload.then.payload.ms"),
                        ({"name": "x", "delay": -5}, "payload.then.delay"),
                        ("later", "payload.then")]:
        r = await api.client.post("/jobs", json={"name": "e", "kind": "echo",
                                                 "payload": {"value": 1, "then": then}})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["field"] == field, r.text
    r = await api.client.post("/jobs", json={"name": "e", "kind": "echo", "payload": {}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "payload.value", r.text
    assert await api.count_jobs() == 0
