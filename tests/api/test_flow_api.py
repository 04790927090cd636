"""PUT/GET /queues and /kinds over HTTP: settings saved and answered with live counts, a
change recorded with when it took effect, and every bad field a 422 naming it with
nothing saved."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api

JSON = {"Content-Type": "application/json"}


async def test_put_queue_creates_then_replaces_and_lists_live_counts(api: Api) -> None:
    created = await api.client.put("/queues/mail", json={"concurrency": 2, "rate_per_s": 1.5,
                                                         "burst": 3, "weight": 4})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/queues/mail"
    body = created.json()
    assert {k: body[k] for k in ("name", "concurrency", "rate_per_s", "burst", "weight",
                                 "paused", "waiting", "processing")} == {
        "name": "mail", "concurrency": 2, "rate_per_s": 1.5, "burst": 3, "weight": 4,
        "paused": False, "waiting": 0, "processing": 0}
    for _ in range(3):
        r = await api.client.post("/jobs", json={"name": "n", "queue": "mail"})
        assert r.status_code == 201
    # PUT replaces: absent fields go back to their defaults
    replaced = await api.client.put("/queues/mail", json={"paused": True})
    assert replaced.status_code == 200
    assert replaced.json() | {"updated_at": None} == {
        "name": "mail", "concurrency": None, "rate_per_s": None, "burst": 1, "weight": 1,
        "paused": True, "waiting": 3, "processing": 0, "updated_at": None}
    listed = (await api.client.get("/queues")).json()["queues"]
    assert [q["name"] for q in listed] == ["mail"]
    assert (await api.client.get("/queues/mail")).json()["waiting"] == 3
    changes = await api.sql("SELECT concurrency, paused, effective_at >= changed_at "
                            "FROM job_limit_changes ORDER BY id")
    assert changes == [(2, False, True), (None, True, True)]


async def test_a_queue_or_kind_without_settings_answers_its_defaults(api: Api) -> None:
    q = (await api.client.get("/queues/nothing-here")).json()
    assert (q["concurrency"], q["weight"], q["paused"], q["waiting"]) == (None, 1, False, 0)
    k = (await api.client.get("/kinds/noop")).json()
    assert (k["name"], k["rate_per_s"], k["burst"]) == ("noop", None, 1)
    assert "weight" not in k


async def test_put_kind(api: Api) -> None:
    r = await api.client.put("/kinds/noop", json={"rate_per_s": 2, "burst": 5})
    assert r.status_code == 201
    assert (await api.client.get("/kinds")).json()["kinds"][0]["rate_per_s"] == 2.0
    bad = await api.client.put("/kinds/noop", json={"weight": 2})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "weight"


@pytest.mark.parametrize(("body", "field"), [
    ({"concurrency": -1}, "concurrency"),
    ({"concurrency": 1.5}, "concurrency"),
    ({"concurrency": True}, "concurrency"),
    ({"rate_per_s": 0}, "rate_per_s"),
    ({"rate_per_s": "fast"}, "rate_per_s"),
    ({"burst": 0}, "burst"),
    ({"burst": None}, "burst"),
    ({"weight": 101}, "weight"),
    ({"weight": 0}, "weight"),
    ({"paused": "yes"}, "paused"),
    ({"colour": "red"}, "colour"),
    ([1, 2], "body"),
])
async def test_each_bad_field_is_named_and_nothing_is_saved(api: Api, body, field) -> None:
    r = await api.client.put("/queues/mail", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert await api.sql("SELECT count(*) FROM job_queues") == [(0,)]
    assert await api.sql("SELECT count(*) FROM job_limit_changes") == [(0,)]


async def test_bad_names_media_types_and_json(api: Api) -> None:
    r = await api.client.put("/queues/bad%20name", json={})
    assert r.status_code == 422 and r.json()["error"]["field"] == "name"
    r = await api.client.put("/queues/mail", content=b"concurrency=1",
                             headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = await api.client.put("/queues/mail", content=b"{nope", headers=JSON)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "malformed_json"
    r = await api.client.put("/kinds/mail", content=b'{"burst": "\xff"}', headers=JSON)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_utf8"
    r = await api.client.put("/queues/mail", content=b"[" * 2000 + b"]" * 2000, headers=JSON)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "too_deep"
    assert await api.sql("SELECT count(*) FROM job_queues") == [(0,)]
    assert await api.sql("SELECT count(*) FROM job_kinds") == [(0,)]
