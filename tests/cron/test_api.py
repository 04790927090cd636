"""`/schedules` over real HTTP against the real app: PUT/GET/LIST/DELETE, every bad input
answered 4xx naming its field with nothing written, the token on writes, and the answers
as /openapi.json describes them."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from boundq.server.schedules import SCHEDULE_DETAIL_SCHEMA, SCHEDULE_SCHEMA
from tests.api.conftest import Api, raw_http, request_bytes, running_api
from tests.conftest import fast_settings

BODY: dict[str, Any] = {"cron": "*/5 * * * *", "timezone": "UTC",
                        "job": {"kind": "sleep", "payload": {"ms": 5}, "priority": 3}}


def error(r: Any, status: int, code: str, field: str | None) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["error"]
    assert (detail["code"], detail.get("field")) == (code, field), detail
    message: str = detail["message"]
    return message


async def test_put_get_list_replace_and_delete(api: Api) -> None:
    r = await api.client.put("/schedules/nightly", json={**BODY, "catch_up": 2})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/schedules/nightly"
    made = r.json()
    jsonschema.validate(made, SCHEDULE_SCHEMA)
    assert (made["name"], made["cron"], made["timezone"], made["catch_up"], made["job"]) == (
        "nightly", "*/5 * * * *", "UTC", 2, BODY["job"])
    r = await api.client.put("/schedules/berlin.v1", json={
        "cron": "30 2 * * *", "timezone": "Europe/Berlin", "job": {}})
    assert r.status_code == 201 and r.json()["catch_up"] == 1  # the default
    assert r.json()["next_tick_at"][11:16] in ("00:30", "01:30")  # 02:30 local, in UTC

    r = await api.client.get("/schedules")
    assert r.status_code == 200
    listed = r.json()["schedules"]
    assert [s["name"] for s in listed] == ["berlin.v1", "nightly"]
    for item in listed:
        jsonschema.validate(item, SCHEDULE_SCHEMA)

    r = await api.client.get("/schedules/nightly")
    assert r.status_code == 200
    jsonschema.validate(r.json(), SCHEDULE_DETAIL_SCHEMA)
    assert r.json()["recent_ticks"] == [] and r.json()["next_tick_at"] == made["next_tick_at"]

    # Same expression: replaced (200), the watermark kept; a new one starts afresh.
    r = await api.client.put("/schedules/nightly", json={**BODY, "job": {"kind": "noop"}})
    assert r.status_code == 200, r.text
    assert r.json()["next_tick_at"] == made["next_tick_at"] and r.json()["catch_up"] == 1
    assert r.json()["created_at"] == made["created_at"]
    r = await api.client.put("/schedules/nightly", json={**BODY, "cron": "0 0 1 1 *"})
    assert r.status_code == 200 and r.json()["next_tick_at"][5:19] == "01-01T00:00:00"

    r = await api.client.delete("/schedules/nightly")
    assert r.status_code == 204 and r.content == b""
    error(await api.client.get("/schedules/nightly"), 404, "not_found", "name")
    error(await api.client.delete("/schedules/nightly"), 404, "not_found", "name")
    assert await api.sql("SELECT name FROM job_schedules") == [("berlin.v1",)]


async def test_get_shows_the_recent_ticks_and_their_jobs(api: Api) -> None:
    assert (await api.client.put("/schedules/tick", json=BODY)).status_code == 201
    await api.sql("UPDATE job_schedules SET first_tick_at = date_trunc('hour', now()), "
                  "next_tick_at = date_trunc('hour', now())")
    from boundq.core import schedules  # fire as a scheduler would, on the API's database
    async with api.state.connection() as conn:
        (due,) = await schedules.due(conn, 10)
        fired = await schedules.fire(conn, schedules.plan(due), 100)
    r = await api.client.get("/schedules/tick")
    jsonschema.validate(r.json(), SCHEDULE_DETAIL_SCHEMA)
    (tick,) = r.json()["recent_ticks"]
    assert tick["job_id"] == fired.job_ids[0]
    job = (await api.client.get(f"/jobs/{tick['job_id']}")).json()
    assert job["name"] == f"tick@{tick['tick_at'].replace('+00:00', 'Z')}"
    assert (job["kind"], job["payload"], job["priority"]) == ("sleep", {"ms": 5}, 3)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"cron": "*/5 * * *"}, "cron"), ({"cron": "* * * * * *"}, "cron"),
    ({"cron": "61 * * * *"}, "cron"), ({"cron": "0 0 30 2 *"}, "cron"), ({"cron": 5}, "cron"),
    ({"cron": None}, "cron"), ({"cron": "@daily"}, "cron"),
    ({"timezone": "Mars/Olympus"}, "timezone"), ({"timezone": ""}, "timezone"),
    ({"timezone": "../etc/passwd"}, "timezone"), ({"timezone": None}, "timezone"),
    ({"timezone": 1}, "timezone"),
    ({"catch_up": 0}, "catch_up"), ({"catch_up": 101}, "catch_up"),
    ({"catch_up": "1"}, "catch_up"), ({"catch_up": True}, "catch_up"),
    ({"job": None}, "job"), ({"job": [1]}, "job"), ({"job": "noop"}, "job"),
    ({"job": {"name": "x"}}, "job.name"),
    ({"job": {"run_at": "2030-01-01T00:00:00Z"}}, "job.run_at"),
    ({"job": {"dedupe_key": "k"}}, "job.dedupe_key"),
    ({"job": {"depends_on": [1]}}, "job.depends_on"),
    ({"job": {"depends_on_index": [0]}}, "job.depends_on_index"),
    ({"job": {"priority": 10}}, "job.priority"), ({"job": {"priority": "high"}}, "job.priority"),
    ({"job": {"kind": "no-such-kind"}}, "job.kind"), ({"job": {"kind": ""}}, "job.kind"),
    ({"job": {"queue": "a b"}}, "job.queue"), ({"job": {"payload": []}}, "job.payload"),
    ({"job": {"kind": "sleep", "payload": {"ms": -1}}}, "job.payload.ms"),
    ({"job": {"payload": {"a": "\u0000"}}}, "job.payload.a"),
    ({"job": {"status": "failed"}}, "job.status"), ({"job": {"delay": -1}}, "job.delay"),
    ({"job": {"timeout": 0}}, "job.timeout"), ({"job": {"max_attempts": 1001}},
                                               "job.max_attempts"),
    ({"job": {"colour": "red"}}, "job.colour"), ({"every": "day"}, "every"),
]


@pytest.mark.parametrize(("change", "field"), BAD, ids=[f for _, f in BAD])
async def test_bad_input_is_422_naming_the_field(shared_api: Api, change: dict[str, Any],
                                                 field: str) -> None:
    r = await shared_api.client.put("/schedules/bad", json={**BODY, **change})
    error(r, 422, "invalid_field", field)
    assert await shared_api.sql("SELECT count(*) FROM job_schedules") == [(0,)]


async def test_missing_fields_are_named(shared_api: Api) -> None:
    for field in ("cron", "timezone", "job"):
        body = {k: v for k, v in BODY.items() if k != field}
        error(await shared_api.client.put("/schedules/m", json=body), 422, "invalid_field", field)


async def test_bad_names_bodies_and_media_types(shared_api: Api) -> None:
    client = shared_api.client
    for bad in ("a%20b", "x" * 101, "caf%C3%A9", "-x", ".hidden"):
        error(await client.put(f"/schedules/{bad}", json=BODY), 422, "invalid_field", "name")
        error(await client.get(f"/schedules/{bad}"), 422, "invalid_field", "name")
        error(await client.delete(f"/schedules/{bad}"), 422, "invalid_field", "name")
    error(await client.put("/schedules/m", content=b'{"cron":', headers={
        "Content-Type": "application/json"}), 400, "malformed_json", None)
    error(await client.put("/schedules/m", content=b"", headers={
        "Content-Type": "application/json"}), 400, "malformed_json", None)
    error(await client.put("/schedules/m", content=b"[1]", headers={
        "Content-Type": "application/json"}), 422, "invalid_field", "body")
    error(await client.put("/schedules/m", content=b'{"cron": "\xff"}', headers={
        "Content-Type": "application/json"}), 400, "invalid_utf8", None)
    error(await client.put("/schedules/m", content=b"{}", headers={
        "Content-Type": "text/plain"}), 415, "unsupported_media_type", None)
    error(await client.put("/schedules/m", content=b'{"cron": "* * * * *", "timezone": "UTC", '
                                                   b'"job": {"payload": {"n": 1e400}}}',
                           headers={"Content-Type": "application/json"}), 422,
          "invalid_field", "job")
    status, raw = await raw_http(shared_api.port, request_bytes(
        "PUT", "/schedules/m", b"", {"Content-Type": "application/json",
                                     "Content-Length": str(2 * 1024 * 1024)}))
    assert status == 413, raw
    assert (await client.post("/schedules/m", json=BODY)).status_code == 405
    assert await shared_api.sql("SELECT count(*) FROM job_schedules") == [(0,)]


async def test_writes_need_the_token_when_one_is_set(db_url: str) -> None:
    async with running_api(db_url, settings=fast_settings(API_TOKEN="sekrit")) as api:
        error(await api.client.put("/schedules/s", json=BODY), 401, "unauthorized", None)
        auth = {"Authorization": "Bearer sekrit"}
        assert (await api.client.put("/schedules/s", json=BODY, headers=auth)).status_code == 201
        error(await api.client.delete("/schedules/s"), 401, "unauthorized", None)
        assert (await api.client.get("/schedules/s")).status_code == 200  # reads stay open
        assert (await api.client.get("/schedules")).status_code == 200
        doc = (await api.client.get("/openapi.json")).json()
        ops = doc["paths"]["/schedules/{name}"]
        assert ops["put"]["security"] == [{"bearer": []}] and "security" not in ops["get"]
        assert (await api.client.delete("/schedules/s", headers=auth)).status_code == 204


async def test_openapi_describes_the_schedules(shared_api: Api) -> None:
    doc = (await shared_api.client.get("/openapi.json")).json()
    put = doc["paths"]["/schedules/{name}"]["put"]
    body = put["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["cron", "timezone", "job"]
    assert {"200", "201", "422"} <= set(put["responses"])
    assert set(doc["paths"]["/schedules/{name}"]) == {"put", "get", "delete"}
    template = body["properties"]["job"]
    assert not {"name", "run_at", "dedupe_key", "depends_on", "depends_on_index"} & set(
        template["properties"])
    assert {"kind", "queue", "payload", "priority", "delay", "max_attempts", "timeout",
            "status"} == set(template["properties"])
