"""Every class of bad input is a 4xx with a JSON error naming the problem, quickly, and
nothing is written."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.api.conftest import Api, raw_http, request_bytes

JSON = {"Content-Type": "application/json"}


async def post_raw(api: Api, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return await api.client.post("/jobs", content=body, headers=headers or JSON)


def error(r: Any, status: int, code: str | None = None, field: str | None = None) -> None:
    assert r.status_code == status, r.text
    detail = r.json()["error"]
    assert set(detail) <= {"code", "message", "field"} and detail["message"]
    if code is not None:
        assert detail["code"] == code, detail
    if field is not None:
        assert detail.get("field") == field, detail


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "priority": 10}, "priority"),
    ({"name": "x", "priority": -1}, "priority"),
    ({"name": "x", "priority": "high"}, "priority"),
    ({"name": "x", "priority": True}, "priority"),
    ({"name": "x", "priority": 10**30}, "priority"),
    ({"name": "x", "foo": 1}, "foo"),
    ({"kind": "noop"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "x", "status": "done"}, "status"),
    ({"name": "x", "kind": "no_such_kind"}, "kind"),
    ({"name": "x", "payload": [1, 2]}, "payload"),
    ({"name": "x", "kind": "sleep", "payload": {"ms": "long"}}, "payload.ms"),
    ({"name": "x", "run_at": "2030-01-01T00:00:00"}, "run_at"),
    ({"name": "x", "run_at": "tomorrow"}, "run_at"),
    ({"name": "x", "run_at": "9999-01-01T00:00:00Z"}, "run_at"),
    ({"name": "x", "run_at": "2030-01-01T00:00:00Z", "delay": 1}, "delay"),
    ({"name": "x", "delay": -1}, "delay"),
    ({"name": "x", "timeout": 0}, "timeout"),
    ({"name": "x", "max_attempts": 0}, "max_attempts"),
    ({"name": "x", "dedupe_key": ""}, "dedupe_key"),
    ({"name": "a\u0000b"}, "name"),
    ({"name": "x", "payload": {"a": "x\u0000"}}, "payload.a"),
    ({"name": "x", "payload": {"k\u0000": 1}}, "payload"),
    ({"name": "x", "payload": {"a": {"b": [1, {"c": "\u0000"}]}}}, "payload.a.b[1].c"),
])
async def test_invalid_field_is_422_naming_it(shared_api: Api, body: dict[str, Any], field: str) -> None:
    r = await shared_api.client.post("/jobs", json=body)
    error(r, 422, "invalid_field", field)
    assert await shared_api.count_jobs() == 0


@pytest.mark.parametrize(("raw", "status", "code", "field"), [
    (b'{"name": "x"', 400, "malformed_json", None),
    (b"", 400, "malformed_json", None),
    (b'{"name": "x"} trailing', 400, "malformed_json", None),
    (b"NaN", 400, "malformed_json", None),
    (b'{"name": "a\x00b"}', 400, "malformed_json", None),  # a raw NUL byte
    (b'{"name": "\xff\xfe"}', 400, "invalid_utf8", None),
    (b'{"name": "\\ud800"}', 400, None, None),  # a lone surrogate
    (b'{"name": "x", "payload": {"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}}", 400,
     "too_deep", None),
    (b"[" * 200_000 + b"]" * 200_000, 422, "invalid_field", "body"),
    (b'{"name": "x", "payload": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", 422,
     "invalid_field", "payload"),
    (b'{"name": "x", "priority": 1e400}', 422, "invalid_field", "priority"),
    (b'{"name": "x", "payload": {"n": 1e400}}', 422, "invalid_field", "payload"),
    (b'{"name": "x", "payload": {"n": ' + b"9" * 5000 + b"}}", 422, "invalid_field",
     "payload"),
    (b"[1, 2]", 422, "invalid_field", "body"),
])
async def test_undecodable_bodies(shared_api: Api, raw: bytes, status: int, code: str | None,
                                  field: str | None) -> None:
    started = time.monotonic()
    r = await post_raw(shared_api, raw)
    assert time.monotonic() - started < 2
    error(r, status, code, field)
    assert await shared_api.count_jobs() == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1"])
async def test_wrong_content_type_is_415(shared_api: Api, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = await shared_api.client.post("/jobs", content=b'{"name": "x"}', headers=headers)
    error(r, 415, "unsupported_media_type")
    assert await shared_api.count_jobs() == 0


async def test_declared_size_is_refused_before_reading(shared_api: Api) -> None:
    # Only the headers are sent: the 413 must come without waiting for the body.
    head = request_bytes("POST", "/jobs", b"", {**JSON, "Content-Length": str(50 * 2**20)})
    started = time.monotonic()
    status, body = await raw_http(shared_api.port, head, read_timeout=3)
    assert status == 413 and b'"too_large"' in body
    assert time.monotonic() - started < 1


async def test_size_is_checked_while_reading(shared_api: Api) -> None:
    """A chunked body (no Content-Length) is cut off once it passes the limit: the 413
    arrives while the client is still sending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", shared_api.port)
    writer.write(b"POST /jobs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    head = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent, chunk = 0, b" " * 65536
    try:
        while not head.done() and sent < 8 * 2**20:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
            await asyncio.sleep(0)
        status_line = (await asyncio.wait_for(head, 5)).split(b"\r\n")[0]
    finally:
        writer.close()
    assert b" 413 " in status_line
    assert sent < 4 * 2**20  # refused near the 1 MiB limit, not after the whole upload
    assert await shared_api.count_jobs() == 0


async def test_slow_body_times_out_with_408(shared_api: Api) -> None:
    body = b'{"name": "slow"}'
    data = request_bytes("POST", "/jobs", body, {**JSON, "Content-Length": str(len(body))})
    started = time.monotonic()
    status, reply = await raw_http(shared_api.port, data, stall_after=len(data) - 5,
                                   read_timeout=5)
    elapsed = time.monotonic() - started
    assert status == 408 and b'"body_timeout"' in reply
    assert elapsed < 2.5  # body_timeout_s is 1 s in the tests
    assert await shared_api.count_jobs() == 0


async def test_bad_content_length_is_400(shared_api: Api) -> None:
    data = request_bytes("POST", "/jobs", b"", {**JSON, "Content-Length": "12abc"})
    status, _ = await raw_http(shared_api.port, data, read_timeout=3)
    assert status == 400
