"""`/queues` and `/kinds`: flow settings with live counts (core/flow.py holds the rules).

    PUT /queues/{name}   {"concurrency", "rate_per_s", "burst", "weight", "paused"}, every
                         field optional (absent = no limit, burst 1, weight 1, running):
                         201 when the queue had no settings, else 200; the answer is the
                         queue as GET shows it
    GET /queues          every queue with settings or with jobs waiting or running
    GET /queues/{name}   one queue (one without settings or jobs answers the defaults)
    PUT /kinds/{name}    the same body without `weight`
    GET /kinds           every kind with settings
    GET /kinds/{name}    one kind

A change applies to every claim that begins after the answer (in-flight jobs keep
running). Bad input is a 422 naming the field; nothing is saved.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from boundq.core import flow
from boundq.core.validation import check_queue_name
from boundq.server.body import read_body, require_json
from boundq.server.errors import ApiError, decode_failure, json_response
from boundq.server.state import ApiState

MAX_SETTINGS_BODY = 4096


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


async def _settings_body(request: Request, state: ApiState, *, weighted: bool
                         ) -> flow.FlowSettings:
    require_json(request)
    raw = await read_body(request, MAX_SETTINGS_BODY, state.options.body_timeout_s)
    try:
        body: Any = msgspec.json.decode(raw) if raw.strip() else {}
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise decode_failure(exc, raw) from None
    return flow.parse_settings(body, weighted=weighted)


async def _put(request: Request, *, weighted: bool) -> Response:
    state = _state(request)
    # Settings change every tenant's share of the workers: tokens of every queue only.
    state.auth.check(request, write=True, admin=True)
    raw = str(request.path_params["name"])
    name = check_queue_name(raw, "name") if weighted else flow.check_kind_name(raw)
    settings = await _settings_body(request, state, weighted=weighted)
    state.monitor.check_available()
    async with state.connection() as conn:
        if weighted:
            row, created = await flow.put_queue(conn, name, settings)
        else:
            row, created = await flow.put_kind(conn, name, settings)
    plural = "queues" if weighted else "kinds"
    location = {"Location": f"/{plural}/{quote(name, safe='')}"}
    return json_response(row, 201 if created else 200, location if created else None)


async def _get(request: Request, *, weighted: bool) -> Response:
    """One queue or kind (one without settings or jobs answers the defaults), or all. A
    scoped token sees its own queues (another is a 404, whether or not it exists); kinds
    span every queue, so they are for tokens of every queue."""
    state = _state(request)
    scope = state.auth.check(request, write=False, admin=not weighted)
    raw = request.path_params.get("name")
    name = None
    if raw is not None:
        name = check_queue_name(str(raw), "name") if weighted else flow.check_kind_name(str(raw))
        if not scope.allows(name):
            raise ApiError(404, "not_found", f"no queue named {name!r}", "name")
    state.monitor.check_available()
    async with state.connection() as conn:
        rows = await (flow.list_queues if weighted else flow.list_kinds)(conn, name)
    if name is not None:
        return json_response(rows[0])
    if weighted:
        return json_response({"queues": [r for r in rows if scope.allows(r["name"])]})
    return json_response({"kinds": rows})


async def put_queue(request: Request) -> Response:
    return await _put(request, weighted=True)


async def put_kind(request: Request) -> Response:
    return await _put(request, weighted=False)


async def get_queues(request: Request) -> Response:
    return await _get(request, weighted=True)


async def get_kinds(request: Request) -> Response:
    return await _get(request, weighted=False)


FLOW_ROUTES = [
    Route("/queues", get_queues, methods=["GET"]),
    Route("/queues/{name}", put_queue, methods=["PUT"]),
    Route("/queues/{name}", get_queues, methods=["GET"]),
    Route("/kinds", get_kinds, methods=["GET"]),
    Route("/kinds/{name}", put_kind, methods=["PUT"]),
    Route("/kinds/{name}", get_kinds, methods=["GET"]),
]
