"""`/modules` over real HTTP against the real app, with the module routes added the way
server/app.py will add them (ROUTES + MODULE_ROUTES)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from psycopg_pool import AsyncConnectionPool

from boundq.core.handlers import JobContext
from boundq.core.wasm.handler import connection_loader, make_wasm_handler
from boundq.core.wasm.limits import WasmLimits
from boundq.core.wasm.modules import MAX_MODULE_BYTES
from boundq.core.wasm.sandbox import Sandbox
from boundq.server.modules import MODULE_SCHEMA
from tests.api.conftest import Api, raw_http, request_bytes, running_api
from tests.conftest import fast_settings
from tests.wasm.wat import ARITH, SPIN, WASI_WRITER, sha, wasm

WASM = {"Content-Type": "application/wasm"}


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async with running_api(db_url) as running:
        yield running


def error(r: Any, status: int, code: str, field: str) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["error"]
    assert (detail["code"], detail.get("field")) == (code, field), detail
    message: str = detail["message"]
    return message


async def test_upload_list_get_replace_and_delete(api: Api) -> None:
    arith = wasm(ARITH)
    r = await api.client.put("/modules/math", content=arith, headers=WASM)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/modules/math"
    body = r.json()
    jsonschema.validate(body, MODULE_SCHEMA)  # as /openapi.json describes it
    assert (body["name"], body["size_bytes"], body["sha256"]) == ("math", len(arith), sha(arith))
    exports = {e["name"]: e for e in body["exports"]}
    assert exports["add"] == {"name": "add", "kind": "func", "params": ["i32", "i32"],
                              "results": ["i32"]}
    assert exports["memory"]["kind"] == "memory" and exports["answer"]["kind"] == "global"

    r = await api.client.put("/modules/spin.v1", content=wasm(SPIN),
                             headers={"Content-Type": "application/wasm; charset=binary"})
    assert r.status_code == 201, r.text
    r = await api.client.get("/modules")
    assert r.status_code == 200
    for listed in r.json()["modules"]:
        jsonschema.validate(listed, MODULE_SCHEMA)
    assert [m["name"] for m in r.json()["modules"]] == ["math", "spin.v1"]
    assert all("wasm" not in m for m in r.json()["modules"])  # never the bytes

    r = await api.client.put("/modules/math", content=wasm(SPIN), headers=WASM)
    assert r.status_code == 200, r.text  # replaced
    replaced = r.json()
    assert replaced["sha256"] == sha(wasm(SPIN)) and replaced["updated_at"] > body["updated_at"]
    assert replaced["created_at"] == body["created_at"]
    r = await api.client.get("/modules/math")
    assert r.status_code == 200 and r.json() == replaced

    r = await api.client.delete("/modules/math")
    assert r.status_code == 204 and r.content == b""
    error(await api.client.get("/modules/math"), 404, "not_found", "name")
    error(await api.client.delete("/modules/math"), 404, "not_found", "name")
    assert [row[0] for row in await api.sql("SELECT name FROM job_modules")] == ["spin.v1"]


async def test_bad_uploads_are_4xx_naming_the_field_and_write_nothing(api: Api) -> None:
    arith = wasm(ARITH)
    put = api.client.put
    error(await put("/modules/m", content=arith), 415, "unsupported_media_type", "Content-Type")
    error(await put("/modules/m", content=arith, headers={"Content-Type": "application/json"}),
          415, "unsupported_media_type", "Content-Type")
    for bad in ("a%20b", "x" * 101, "caf%C3%A9"):
        error(await put(f"/modules/{bad}", content=arith, headers=WASM), 422, "invalid_field",
              "name")
    error(await api.client.get("/modules/a%20b"), 422, "invalid_field", "name")
    error(await put("/modules/m", content=b"", headers=WASM), 422, "invalid_field", "body")
    message = error(await put("/modules/m", content=b"(module)", headers=WASM), 422,
                    "invalid_module", "body")
    assert "not a WebAssembly binary" in message and "not WAT text" in message
    message = error(await put("/modules/m", content=b"\0asm\x0d\0\x01\0", headers=WASM), 422,
                    "invalid_module", "body")
    assert "not components" in message
    message = error(await put("/modules/m", content=arith[:-3], headers=WASM), 422,
                    "invalid_module", "body")
    assert message.startswith("wasmtime refused the module: failed to parse WebAssembly module")
    # Exactly the limit is read and judged by wasmtime; one byte more is a 413, from the
    # Content-Length alone or while a chunked body streams in.
    at_limit = b"\0asm\x01\0\0\0" + b"\0" * (MAX_MODULE_BYTES - 8)
    error(await put("/modules/m", content=at_limit, headers=WASM), 422, "invalid_module", "body")
    status, raw = await raw_http(api.port, request_bytes(
        "PUT", "/modules/m", b"", {**WASM, "Content-Length": str(MAX_MODULE_BYTES + 1)}))
    assert status == 413 and b'"field":"body"' in raw and b"10 MiB" in raw, raw
    status, raw = await chunked_upload(api.port, MAX_MODULE_BYTES + 1)
    assert status == 413 and b'"field":"body"' in raw, raw
    assert await api.sql("SELECT name FROM job_modules") == []


async def chunked_upload(port: int, size: int) -> tuple[int, bytes]:
    """PUT `size` bytes without a Content-Length; stop sending once an answer comes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PUT /modules/m HTTP/1.1\r\nHost: t\r\nContent-Type: application/wasm\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    head = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent, chunk = 0, b"\0" * 65536
    try:
        while not head.done() and sent < size:
            piece = chunk[: size - sent]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            sent += len(piece)
        if not head.done():
            writer.write(b"0\r\n\r\n")
        lines = (await asyncio.wait_for(head, 10)).split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines
                      if line.lower().startswith(b"content-length:"))
        return int(lines[0].split(b" ")[1]), await reader.readexactly(length)
    finally:
        writer.close()


async def test_writes_need_the_token_when_one_is_set(db_url: str) -> None:
    async with running_api(db_url, settings=fast_settings(API_TOKEN="sekrit")) as api:
        arith = wasm(ARITH)
        r = await api.client.put("/modules/m", content=arith, headers=WASM)
        assert r.status_code == 401, r.text
        r = await api.client.put("/modules/m", content=arith,
                                 headers={**WASM, "Authorization": "Bearer sekrit"})
        assert r.status_code == 201, r.text
        assert (await api.client.delete("/modules/m")).status_code == 401
        assert (await api.client.get("/modules/m")).status_code == 200  # reads stay open


async def test_an_uploaded_module_runs_in_a_job(api: Api) -> None:
    """Upload through HTTP, run through the handler with the worker-side loader: what the
    API accepted is what the sandbox compiles and calls."""
    for name, text in [("math", ARITH), ("wasi", WASI_WRITER)]:
        r = await api.client.put(f"/modules/{name}", content=wasm(text), headers=WASM)
        assert r.status_code == 201, r.text
    box = Sandbox(WasmLimits(threads=1))
    try:
        async with AsyncConnectionPool(api.db_url, min_size=1, max_size=2, open=False) as pool:
            run = make_wasm_handler(connection_loader(pool.connection), box)
            context = JobContext(1, 1, "wasm", {"module": "math", "function": "divmod",
                                                "args": [17, 5]}, "o")
            assert await run(context) == [3, 2]
    finally:
        box.close()
