"""`/modules`: the WebAssembly modules that jobs of kind `wasm` run.

    PUT    /modules/{name}   raw .wasm body (Content-Type: application/wasm, <= 10 MiB),
                             compiled by wasmtime before it is stored: 201 new, 200 replaced
    GET    /modules          every module: name, size_bytes, sha256, exports, timestamps
    GET    /modules/{name}   the same for one
    DELETE /modules/{name}   204; jobs naming it fail (and retry) until it is uploaded again

Bad input is a 4xx naming the field: `name` (422), `Content-Type` (415), `body` (413 over
10 MiB, 422 when empty or when wasmtime refuses the module, with wasmtime's reason).
"""

from __future__ import annotations

import asyncio
from typing import Any

import wasmtime
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from boundq.core.queries import Q
from boundq.core.wasm.modules import (
    MAX_MODULE_BYTES,
    ModuleInfo,
    ModuleRejected,
    inspect_module,
    new_engine,
)
from boundq.core.wasm.payload import NAME_RULE, valid_name
from boundq.server.body import media_type, read_body
from boundq.server.errors import ApiError, json_response
from boundq.server.state import ApiState

WASM_MEDIA_TYPE = "application/wasm"
# Compiling a large module takes a core for a while: at most this many uploads compile at
# once per API process; the others wait their turn (their request is still in flight).
UPLOAD_COMPILES = 2


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _name(request: Request) -> str:
    name = str(request.path_params["name"])
    if not valid_name(name):
        raise ApiError(422, "invalid_field", NAME_RULE, "name")
    return name


def _not_found(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no module named {name!r}", "name")


class _Compiler:
    """The API process's engine (same configuration as the workers') and its bound."""

    def __init__(self) -> None:
        self.engine: wasmtime.Engine = new_engine()
        self.slots = asyncio.Semaphore(UPLOAD_COMPILES)

    async def inspect(self, wasm: bytes) -> ModuleInfo:
        async with self.slots:
            return await asyncio.to_thread(inspect_module, wasm, self.engine)


def _compiler(request: Request) -> _Compiler:
    # Kept on the app: a semaphore belongs to the event loop the app runs on.
    compiler: _Compiler | None = getattr(request.app.state, "wasm_compiler", None)
    if compiler is None:
        compiler = request.app.state.wasm_compiler = _Compiler()
    return compiler


def _require_wasm(request: Request) -> None:
    kind, _ = media_type(request)
    if kind != WASM_MEDIA_TYPE:
        raise ApiError(415, "unsupported_media_type", f"send the compiled module as "
                       f"Content-Type: {WASM_MEDIA_TYPE} (raw .wasm bytes, not WAT text)",
                       "Content-Type")


async def put_module(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=True, admin=True)  # modules are global
    name = _name(request)
    _require_wasm(request)
    try:
        wasm = await read_body(request, MAX_MODULE_BYTES, state.options.bulk_body_timeout_s)
    except ApiError as exc:
        if exc.status == 413:
            exc.message = f"the module exceeds {MAX_MODULE_BYTES} bytes (10 MiB)"
        exc.field = "body"
        raise
    if not wasm:
        raise ApiError(422, "invalid_field", "the body is empty; send the .wasm bytes", "body")
    state.monitor.check_available()  # before the compile: a refused write wastes it
    try:
        info = await _compiler(request).inspect(wasm)
    except ModuleRejected as exc:
        raise ApiError(422, "invalid_module", f"wasmtime refused the module: {exc}",
                       "body") from None
    async with state.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(Q.job_module_put, {
            "name": name, "wasm": wasm, "sha256": info.sha256, "size_bytes": info.size_bytes,
            "exports": Jsonb(info.exports)})
        row = await cur.fetchone()
    assert row is not None
    created = bool(row.pop("created"))
    headers = {"Location": f"/modules/{name}"} if created else None
    return json_response(row, 201 if created else 200, headers)


async def get_module(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=False, admin=True)
    name = _name(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(Q.job_module_get, {"name": name})
        row = await cur.fetchone()
    if row is None:
        raise _not_found(name)
    return json_response(row)


async def list_modules(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=False, admin=True)
    state.monitor.check_available()
    async with state.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(Q.job_module_list)
        rows = await cur.fetchall()
    return json_response({"modules": rows})


async def delete_module(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=True, admin=True)  # modules are global
    name = _name(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        cur = await conn.execute(Q.job_module_delete, {"name": name})
        row = await cur.fetchone()
    if row is None:
        raise _not_found(name)
    return Response(status_code=204)


MODULE_ROUTES = [
    Route("/modules", list_modules, methods=["GET"]),
    Route("/modules/{name}", put_module, methods=["PUT"]),
    Route("/modules/{name}", get_module, methods=["GET"]),
    Route("/modules/{name}", delete_module, methods=["DELETE"]),
]


# --- OpenAPI ---------------------------------------------------------------------------
_EXPORT = {"type": "object", "required": ["name", "kind"], "properties": {
    "name": {"type": "string"},
    "kind": {"enum": ["func", "memory", "global", "table", "other"]},
    "params": {"type": "array", "items": {"type": "string"}},
    "results": {"type": "array", "items": {"type": "string"}}}}
MODULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "size_bytes", "sha256", "exports", "created_at", "updated_at"],
    "properties": {
        "name": {"type": "string"}, "size_bytes": {"type": "integer"},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "exports": {"type": "array", "items": _EXPORT},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"}}}
_ERROR_TEXT = {401: "Missing or wrong `Authorization: Bearer <token>` (only when API_TOKEN or "
                    "API_TOKENS is set)",
               403: "Modules are global: a token of API_TOKENS that may use some queues only "
                    "cannot see or change them",
               404: "No such module", 408: "The body did not arrive in time",
               413: "The module exceeds 10 MiB", 415: "Content-Type is not application/wasm",
               422: "`error.field` names what is wrong: the name, or the body (empty, or "
                    "refused by wasmtime, with the reason)",
               503: "The database is unreachable or every connection is busy; retry after "
                    "Retry-After"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    out = {}
    for code in codes:
        response = _json({"$ref": "#/components/schemas/ErrorBody"}, _ERROR_TEXT[code])
        if code == 503:
            response["headers"] = {"Retry-After": {"description": "seconds",
                                                   "schema": {"type": "string"}}}
        out[str(code)] = response
    return out


def module_paths(*, auth_writes: bool, auth_reads: bool, scoped: bool = False
                 ) -> dict[str, Any]:
    """The `/modules` operations for /openapi.json (`paths.update(module_paths(...))`)."""
    w: list[dict[str, list[str]]] | None = [{"bearer": []}] if auth_writes else None
    r: list[dict[str, list[str]]] | None = [{"bearer": []}] if auth_reads else None
    w401 = (401, 403) if scoped else (401,) if auth_writes else ()
    r401 = (401, 403) if scoped else (401,) if auth_reads else ()
    name = [{"name": "name", "in": "path", "required": True, "schema": {
        "type": "string", "pattern": "^[A-Za-z0-9_.-]{1,100}$"}}]

    def op(summary: str, responses: dict[str, Any], security: Any, **extra: Any) -> dict[str, Any]:
        out = {"summary": summary, "responses": responses, **extra}
        if security:
            out["security"] = security
        return out

    return {
        "/modules": {"get": op("Every uploaded WebAssembly module (without its bytes)", {
            "200": _json({"type": "object", "required": ["modules"], "properties": {
                "modules": {"type": "array", "items": MODULE_SCHEMA}}}, "The modules, by name"),
            **_errors(*r401, 503)}, r)},
        "/modules/{name}": {
            "put": op("Upload or replace a module for jobs of kind wasm", {
                "201": _json(MODULE_SCHEMA, "Uploaded"),
                "200": _json(MODULE_SCHEMA, "Replaced"),
                **_errors(*w401, 408, 413, 415, 422, 503)}, w, parameters=name,
                requestBody={"required": True, "content": {WASM_MEDIA_TYPE: {
                    "schema": {"type": "string", "format": "binary",
                               "maxLength": MAX_MODULE_BYTES}}}}),
            "get": op("One module", {"200": _json(MODULE_SCHEMA, "The module"),
                                     **_errors(*r401, 404, 422, 503)}, r, parameters=name),
            "delete": op("Delete a module", {"204": {"description": "Deleted"},
                                             **_errors(*w401, 404, 422, 503)}, w,
                         parameters=name),
        },
    }
