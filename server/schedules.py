"""`/schedules`: cron schedules that create one job per tick (core/cron.py, docs/cron.md).

    PUT    /schedules/{name}   {"cron": "*/5 * * * *", "timezone": "UTC", "job": {...},
                               "catch_up": 1}: 201 new, 200 replaced
    GET    /schedules          every schedule, by name
    GET    /schedules/{name}   one, with its most recent ticks and the job each made
    DELETE /schedules/{name}   204; no job is made for it once the delete committed

`job` is the body of POST /jobs without `name` (each job is named `<schedule>@<tick>`),
`run_at` (it runs at its tick; `delay` runs it later) and `dedupe_key`; it is decoded and
validated exactly as POST /jobs does, and its errors name `job.<field>`. Bad input is a
4xx naming the field: `name`, `cron`, `timezone`, `catch_up`, `job`, `job.<field>`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from boundq.core import schedules
from boundq.core.cron import (
    CATCH_UP_MAX,
    CRON_FIELDS,
    FORBIDDEN_TEMPLATE_FIELDS,
    MAX_CRON_CHARS,
    MAX_ZONE_CHARS,
    validate_schedule,
)
from boundq.core.errors import JobValidationError
from boundq.core.validation import QUEUE_NAME, QUEUE_RULE, check_queue_name
from boundq.server.body import MAX_JOB_BODY, decode_job, read_body, require_json
from boundq.server.errors import ApiError, decode_failure, json_response
from boundq.server.schemas import JobCreate
from boundq.server.state import ApiState


class _PutBody(msgspec.Struct, forbid_unknown_fields=True):
    """The shape only; validate_schedule judges the values and names the field."""

    cron: Any
    timezone: Any
    job: Any
    catch_up: Any = None


_body_decoder = msgspec.json.Decoder(_PutBody)
_encoder = msgspec.json.Encoder()


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _name(request: Request) -> str:
    try:
        return check_queue_name(str(request.path_params["name"]), "name")
    except JobValidationError as exc:
        raise ApiError(422, "invalid_field", exc.message, "name") from None


def _not_found(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no schedule named {name!r}", "name")


def _decode(body: bytes) -> dict[str, Any]:
    if not body:
        raise ApiError(400, "malformed_json", "the body is empty; send a JSON object")
    try:
        decoded = _body_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
            RecursionError) as exc:
        raise decode_failure(exc, body) from None
    out: dict[str, Any] = msgspec.structs.asdict(decoded)
    return out


def _job_template(job: Any) -> Any:
    """The template through POST /jobs' own decoder (types, ranges, unknown fields), with
    the name each tick gives it; its errors name `job.<field>`."""
    if not isinstance(job, dict) or job.get("name") is not None:
        return job  # validate_schedule names the problem
    try:
        decode_job(_encoder.encode({**job, "name": "schedule"}))
    except ApiError as exc:
        exc.field = "job" if exc.field in (None, "body") else f"job.{exc.field}"
        raise
    return job


async def put_schedule(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=True, admin=True)  # schedules span tenants
    name = _name(request)
    require_json(request)
    body = _decode(await read_body(request, MAX_JOB_BODY, state.options.body_timeout_s))
    _job_template(body.get("job"))
    spec = validate_schedule(name, body, state.registry, state.settings)
    state.monitor.check_available()
    async with state.connection() as conn:
        row, created = await schedules.put(conn, spec)
    headers = {"Location": f"/schedules/{name}"} if created else None
    return json_response(row, 201 if created else 200, headers)


async def get_schedule(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=False, admin=True)
    name = _name(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        row = await schedules.get(conn, name)
    if row is None:
        raise _not_found(name)
    return json_response(row)


async def list_schedules(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=False, admin=True)
    state.monitor.check_available()
    async with state.connection() as conn:
        rows = await schedules.list_all(conn)
    return json_response({"schedules": rows})


async def delete_schedule(request: Request) -> Response:
    state = _state(request)
    state.auth.check(request, write=True, admin=True)  # schedules span tenants
    name = _name(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        found = await schedules.delete(conn, name)
    if not found:
        raise _not_found(name)
    return Response(status_code=204)


SCHEDULE_ROUTES = [
    Route("/schedules", list_schedules, methods=["GET"]),
    Route("/schedules/{name}", put_schedule, methods=["PUT"]),
    Route("/schedules/{name}", get_schedule, methods=["GET"]),
    Route("/schedules/{name}", delete_schedule, methods=["DELETE"]),
]


# --- OpenAPI ---------------------------------------------------------------------------
_TIME = {"type": "string", "format": "date-time"}


def _template_schema() -> dict[str, Any]:
    """JobCreate's schema (what POST /jobs decodes) without the fields a schedule sets."""
    schema: dict[str, Any] = msgspec.json.schema(JobCreate)["$defs"]["JobCreate"]
    props = {k: v for k, v in schema["properties"].items() if k not in FORBIDDEN_TEMPLATE_FIELDS}
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": "The body of POST /jobs without name, run_at, dedupe_key and the "
                           "dependency fields"}


_PUT_BODY = {
    "type": "object", "required": ["cron", "timezone", "job"], "additionalProperties": False,
    "properties": {
        "cron": {"type": "string", "minLength": 1, "maxLength": MAX_CRON_CHARS,
                 "description": f"5 fields: {CRON_FIELDS}"},
        "timezone": {"type": "string", "minLength": 1, "maxLength": MAX_ZONE_CHARS,
                     "description": "IANA time zone, such as UTC or Europe/Berlin"},
        "job": _template_schema(),
        "catch_up": {"type": "integer", "minimum": 1, "maximum": CATCH_UP_MAX, "default": 1,
                     "description": "after an outage, jobs for at most this many of the "
                                    "latest missed ticks; earlier ones are skipped"}}}
_FIELDS: dict[str, Any] = {
    "name": {"type": "string"}, "cron": {"type": "string"}, "timezone": {"type": "string"},
    "job": {"type": "object"}, "catch_up": {"type": "integer"},
    "next_tick_at": {**_TIME, "description": "the first tick not yet handled"},
    "created_at": _TIME, "updated_at": _TIME}
SCHEDULE_SCHEMA: dict[str, Any] = {"type": "object", "required": list(_FIELDS),
                                   "properties": _FIELDS}
TICK_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["tick_at", "job_id", "window_start", "fired_at"],
    "properties": {"tick_at": _TIME, "job_id": {"type": "integer"},
                   "window_start": {**_TIME, "description": "ticks in [window_start, tick_at) "
                                    "without a row of their own were skipped (catch_up)"},
                   "fired_at": _TIME}}
SCHEDULE_DETAIL_SCHEMA: dict[str, Any] = {
    "type": "object", "required": [*_FIELDS, "recent_ticks"],
    "properties": {**_FIELDS, "recent_ticks": {"type": "array", "items": TICK_SCHEMA}}}
_ERROR_TEXT = {400: "The body is not JSON", 401: "Missing or wrong `Authorization: Bearer "
               "<token>` (only when API_TOKEN is set)",
               403: "A token of API_TOKENS limited to some queues: schedules are for tokens "
                    "of every queue", 404: "No such schedule",
               408: "The body did not arrive in time", 413: "The body is too large",
               415: "Content-Type is not application/json",
               422: "`error.field` names what is wrong: name, cron, timezone, catch_up, job "
                    "or job.<field>",
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


def schedule_paths(*, auth_writes: bool, auth_reads: bool, scoped: bool) -> dict[str, Any]:
    """The `/schedules` operations for /openapi.json (`paths.update(schedule_paths(...))`).
    Schedule names are global, so schedules are for tokens of every queue: with scoped
    tokens configured, every operation may answer 403."""
    w: list[dict[str, list[str]]] | None = [{"bearer": []}] if auth_writes else None
    r: list[dict[str, list[str]]] | None = [{"bearer": []}] if auth_reads else None
    w401 = (401, 403) if auth_writes and scoped else (401,) if auth_writes else ()
    r401 = (401, 403) if auth_reads and scoped else (401,) if auth_reads else ()
    name = [{"name": "name", "in": "path", "required": True, "description": QUEUE_RULE,
             "schema": {"type": "string", "pattern": f"^{QUEUE_NAME.pattern}$"}}]

    def op(summary: str, responses: dict[str, Any], security: Any, **extra: Any) -> dict[str, Any]:
        out = {"summary": summary, "responses": responses, **extra}
        if security:
            out["security"] = security
        return out

    return {
        "/schedules": {"get": op("Every cron schedule, by name", {
            "200": _json({"type": "object", "required": ["schedules"], "properties": {
                "schedules": {"type": "array", "items": SCHEDULE_SCHEMA}}}, "The schedules"),
            **_errors(*r401, 503)}, r)},
        "/schedules/{name}": {
            "put": op("Create or replace a cron schedule: one job per tick", {
                "201": _json(SCHEDULE_SCHEMA, "Created"),
                "200": _json(SCHEDULE_SCHEMA, "Replaced"),
                **_errors(400, *w401, 408, 413, 415, 422, 503)}, w, parameters=name,
                requestBody={"required": True, "content": {
                    "application/json": {"schema": _PUT_BODY}}}),
            "get": op("One schedule and its most recent ticks", {
                "200": _json(SCHEDULE_DETAIL_SCHEMA, "The schedule"),
                **_errors(*r401, 404, 422, 503)}, r, parameters=name),
            "delete": op("Delete a schedule (the jobs it made stay)", {
                "204": {"description": "Deleted"},
                **_errors(*w401, 404, 422, 503)}, w, parameters=name),
        },
    }
