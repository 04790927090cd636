"""POST /jobs/bulk: the seed's multipart upload and a plain JSON array."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from boundq.core.config import Settings
from tests.api.conftest import Api, running_api
from tests.conftest import fast_settings

JSON = {"Content-Type": "application/json"}


def multipart(parts: Sequence[tuple[str, str | None, bytes]], boundary: str = "XyZ123") -> bytes:
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename:
            disposition += f'; filename="{filename}"'
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/json\r\n\r\n").encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def test_seed_multipart_upload(api: Api) -> None:
    jobs = [{"name": f"Job {i}", "status": "new"} for i in range(500)]
    r = await api.client.post("/jobs/bulk", files={"file": ("jobs.json", json.dumps(jobs),
                                                            "application/json")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 500 and len(body["ids"]) == 500 and body["errors"] == []
    rows = await api.sql("SELECT id, name FROM jobs ORDER BY id")
    assert [row[1] for row in rows] == [f"Job {i}" for i in range(500)]
    assert [row[0] for row in rows] == body["ids"]


async def test_json_array_partial_errors(api: Api) -> None:
    items: list[Any] = [{"name": "a"}, {"name": "b", "priority": 99}, "nope",
                        {"name": "c", "kind": "sleep", "payload": {"ms": 1}},
                        {"name": "d", "bogus": 1}]
    r = await api.client.post("/jobs/bulk", json=items)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "priority"), (2, "body"), (4, "bogus")]
    assert await api.count_jobs() == 2


async def test_atomic_rejects_all(api: Api) -> None:
    items = [{"name": "a"}, {"name": "b", "priority": 99}, {"name": "c"}]
    r = await api.client.post("/jobs/bulk?atomic=true", json=items)
    assert r.status_code == 422
    body = r.json()
    assert body["error"]["code"] == "invalid_items" and body["error"]["field"] == "[1].priority"
    assert body["created"] == 0 and body["ids"] == []
    assert body["errors"] == [{"index": 1, "field": "priority",
                               "message": body["errors"][0]["message"]}]
    assert await api.count_jobs() == 0
    ok = await api.client.post("/jobs/bulk?atomic=true", json=items[:1])
    assert ok.status_code == 201 and ok.json()["created"] == 1


async def test_all_invalid_or_empty_is_422(api: Api) -> None:
    r = await api.client.post("/jobs/bulk", json=[{"nope": 1}])
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "nope"
    r = await api.client.post("/jobs/bulk", json=[])
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    r = await api.client.post("/jobs/bulk", json={"name": "not an array"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "body"
    r = await api.client.post("/jobs/bulk?atomic=maybe", json=[{"name": "x"}])
    assert r.status_code == 422 and r.json()["error"]["field"] == "atomic"
    assert await api.count_jobs() == 0


async def test_bulk_dedupe_keys(api: Api) -> None:
    items = [{"name": "a", "dedupe_key": "k"}, {"name": "b", "dedupe_key": "k"}, {"name": "c"}]
    body = (await api.client.post("/jobs/bulk", json=items)).json()
    assert body["ids"][0] == body["ids"][1] != body["ids"][2]
    assert await api.count_jobs() == 2


async def test_multipart_problems(api: Api) -> None:
    def post(body: bytes, boundary: str = "XyZ123") -> Any:
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return api.client.post("/jobs/bulk", content=body, headers=headers)

    parts = [(f"f{i}", None, b"x") for i in range(20)]
    r = await post(multipart(parts))
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_parts"
    r = await post(multipart([("other", None, b"[]")]))
    assert r.status_code == 422 and r.json()["error"]["field"] == "file"
    r = await post(b"--XyZ123\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n[]")
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_multipart"
    r = await post(multipart([("file", "a.json", b"[")]))
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    r = await post(multipart([("file", "a.json", b'[{"name": "\xff"}]')]))
    assert r.status_code in (400, 422)
    r = await api.client.post("/jobs/bulk", content=b"[]",
                              headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400
    r = await api.client.post("/jobs/bulk", content=b"[]", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415
    # the file part is named something else but is the only upload: accepted
    r = await post(multipart([("upload", "jobs.json", b'[{"name": "x"}]')]))
    assert r.status_code == 201 and r.json()["created"] == 1
    assert await api.count_jobs() == 1


async def test_bulk_size_limit(db_url: str) -> None:
    settings: Settings = fast_settings(MAX_BULK_BYTES=4096)
    async with running_api(db_url, settings) as api:
        big = json.dumps([{"name": "x" * 100}] * 60).encode()
        r = await api.client.post("/jobs/bulk", content=big, headers=JSON)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
        r = await api.client.post("/jobs/bulk", files={"file": ("j.json", big)})
        assert r.status_code == 413
        small = json.dumps([{"name": "x"}] * 10).encode()
        r = await api.client.post("/jobs/bulk", files={"file": ("j.json", small)})
        assert r.status_code == 201
        assert await api.count_jobs() == 10
