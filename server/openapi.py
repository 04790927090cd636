"""`GET /openapi.json`: the contract, generated from the Structs that decode requests.

Component schemas come from msgspec (server/schemas.py); this module only lays out the
paths, parameters and the status codes each operation can answer. The document reflects
the running configuration: the operations that need a token (server/auth.py AuthPolicy)
declare bearer auth.
"""

from __future__ import annotations

from typing import Any

import msgspec

from boundq.core.config import Settings
from boundq.core.flow import COUNT_CAP, MAX_BURST, MAX_CONCURRENCY, MAX_RATE_PER_S
from boundq.core.validation import MAX_KEY
from boundq.server import schemas as s
from boundq.server.auth import AuthPolicy
from boundq.server.modules import module_paths
from boundq.server.options import ApiOptions
from boundq.server.schedules import schedule_paths

MAX_ID = 2**63 - 1
_TYPES = [s.JobCreate, s.Job, s.JobDetail, s.JobPage, s.ErrorBody, s.BulkResult,
          s.BulkRejected, s.Stats, s.Health, s.Ready]
_ERRORS = {
    400: "Malformed JSON, invalid UTF-8, nesting too deep, or a malformed multipart body",
    401: "Missing or wrong `Authorization: Bearer <token>` (only when API_TOKEN or "
         "API_TOKENS is set)",
    403: "The token may not do this: a queue outside its API_TOKENS scope (`error.field` "
         "is `queue`), or an endpoint about every queue",
    404: "No such job (a job of a queue outside the token's scope is answered the same), "
         "or for GET /jobs a `queue` outside the token's scope",
    408: "The body did not arrive in time",
    409: "Conflict (see the message)",
    413: "The body is too large",
    415: "Unsupported Content-Type",
    422: "A field is invalid; `error.field` names it",
    429: ("queue_full: MAX_QUEUE_DEPTH jobs are waiting in the job's queue (per queue); "
          "overloaded: the API is at capacity and this token holds its share of the creates "
          "in flight; retry after Retry-After seconds"),
    503: "The database is unreachable or every connection is busy; retry after Retry-After",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str,
          headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_ref("ErrorBody"), _ERRORS[code],
                             _RETRY_AFTER if code in (429, 503) else None) for code in codes}


def _op(summary: str, responses: dict[str, Any], *, secured: bool, **extra: Any
        ) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses, **extra}
    if secured:
        op["security"] = [{"bearer": []}]
    return op


def _job_id_param() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}


def _flow_settings(*, weighted: bool) -> dict[str, Any]:
    nullable_int = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_CONCURRENCY}
    props: dict[str, Any] = {
        "concurrency": {**nullable_int, "description": "jobs processing at once, across "
                        "every process and host; null = no limit"},
        "rate_per_s": {"type": ["number", "null"], "exclusiveMinimum": 0,
                       "maximum": MAX_RATE_PER_S,
                       "description": "token bucket refill rate; null = no limit"},
        "burst": {"type": "integer", "minimum": 1, "maximum": MAX_BURST, "default": 1},
        "paused": {"type": "boolean", "default": False},
    }
    if weighted:
        props["weight"] = {"type": "integer", "minimum": 1, "maximum": 100, "default": 1}
    return {"type": "object", "additionalProperties": False, "properties": props}


def _flow_view(*, weighted: bool) -> dict[str, Any]:
    view = _flow_settings(weighted=weighted)
    props = {**view["properties"], "name": {"type": "string"},
             "waiting": {"type": "integer", "minimum": 0,
                         "description": f"runnable jobs (counted up to {COUNT_CAP})"},
             "processing": {"type": "integer", "minimum": 0},
             "updated_at": {"type": ["string", "null"], "format": "date-time"}}
    return {"type": "object", "required": sorted(props), "properties": props}


def _flow_paths(w: dict[str, bool], r: dict[str, bool], write_401: tuple[int, ...],
                read_401: tuple[int, ...], *, scoped: bool) -> dict[str, Any]:
    """Settings change every tenant's share: writes, and kinds (which span queues), are
    for all-queue tokens (403 for a scoped one); a scoped token sees its own queues, and
    another queue is a 404."""
    admin_403 = (403,) if scoped else ()
    out: dict[str, Any] = {}
    for plural, weighted, rule in (("queues", True, "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"),
                                   ("kinds", False, None)):
        one = _flow_view(weighted=weighted)
        name_schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 100}
        if rule:
            name_schema["pattern"] = rule
        name = [{"name": "name", "in": "path", "required": True, "schema": name_schema}]
        read_403 = () if weighted else admin_403
        read_404 = (404,) if weighted and scoped else ()
        out[f"/{plural}"] = {"get": _op(f"Every {plural[:-1]} with settings, and live counts", {
            "200": _json({"type": "object", "required": [plural],
                          "properties": {plural: {"type": "array", "items": one}}},
                         f"The {plural}, by name"),
            **_errors(*read_401, *read_403, 503)}, **r)}
        out[f"/{plural}/{{name}}"] = {
            "put": _op(f"Set a {plural[:-1]}'s limits (absent fields: no limit, burst 1, "
                       "weight 1, not paused); claims that begin after the answer obey them", {
                "201": _json(one, "Created"), "200": _json(one, "Replaced"),
                **_errors(400, *write_401, *admin_403, 408, 413, 415, 422, 503)},
                parameters=name,
                requestBody={"required": True, "content": {"application/json": {
                    "schema": _flow_settings(weighted=weighted)}}}, **w),
            "get": _op(f"One {plural[:-1]}: settings and live counts", {
                "200": _json(one, f"The {plural[:-1]}"),
                **_errors(*read_401, *read_403, *read_404, 422, 503)}, parameters=name, **r),
        }
    return out


def build_openapi(settings: Settings, options: ApiOptions) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _TYPES, ref_template="#/components/schemas/{name}")
    policy = AuthPolicy.of(settings, options.protect_reads)
    auth_writes, auth_reads = policy.writes_need_token, policy.reads_need_token
    create_403 = (403,) if policy.scoped else ()
    list_404 = (404,) if policy.scoped else ()  # a `queue` outside the token's scope
    w = {"secured": auth_writes}
    r = {"secured": auth_reads}
    read_401 = (401,) if auth_reads else ()
    write_401 = (401,) if auth_writes else ()
    job_200 = {"200": _json(_ref("Job"), "The job")}
    idem = {"name": "Idempotency-Key", "in": "header", "required": False,
            "description": "A retried request with the same key and body returns the same "
                           "job (200); the same key with another body is a 409.",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY,
                       "pattern": "^[!-~]+$"}}
    bulk_body = {"type": "array", "items": _ref("JobCreate"), "minItems": 1}
    paths: dict[str, Any] = {
        "/jobs": {
            "post": _op("Create one job", {
                "201": _json(_ref("Job"), "Created",
                             {"Location": {"schema": {"type": "string"}}}),
                "200": _json(_ref("Job"), "An idempotent replay, or the live job that holds "
                             "the dedupe_key"),
                **_errors(400, *write_401, *create_403, 408, 409, 413, 415, 422, 429, 503),
            }, parameters=[idem], requestBody={"required": True, "content": {
                "application/json": {"schema": _ref("JobCreate")}}}, **w),
            "get": _op("List jobs, newest first (keyset pagination)", {
                "200": _json(_ref("JobPage"), "A page of jobs"),
                **_errors(*read_401, *list_404, 422, 503),
            }, parameters=[
                {"name": "status", "in": "query", "schema": {"enum": list(s.STATUSES)}},
                {"name": "kind", "in": "query", "schema": {
                    "type": "string", "minLength": 1, "maxLength": 100}},
                {"name": "queue", "in": "query", "schema": {
                    "type": "string", "minLength": 1, "maxLength": 100}},
                {"name": "limit", "in": "query", "schema": {
                    "type": "integer", "minimum": 1, "maximum": options.page_max, "default": 50}},
                {"name": "cursor", "in": "query", "description": "next_cursor of the last page",
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}},
            ], **r),
        },
        "/jobs/bulk": {"post": _op("Create many jobs in one transaction (COPY)", {
            "201": _json(_ref("BulkResult"), "The ids of the valid items in input order, "
                         "and an error per invalid item"),
            "422": _json({"anyOf": [_ref("BulkRejected"), _ref("ErrorBody")]},
                         "Invalid items (atomic, or none valid): nothing was written"),
            **_errors(400, *write_401, 408, 413, 415, 429, 503),
        }, parameters=[{"name": "atomic", "in": "query", "description": "all or nothing",
                        "schema": {"type": "boolean", "default": False}}],
            requestBody={"required": True, "content": {
                "application/json": {"schema": bulk_body},
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}}}},
            }}, **w)},
        "/jobs/{job_id}": {"get": _op("A job and its attempt history", {
            "200": _json(_ref("JobDetail"), "The job"),
            **_errors(*read_401, 404, 422, 429, 503)}, parameters=[_job_id_param(), {
                "name": "wait", "in": "query",
                "description": "long poll: answer when the job is terminal or after this "
                               "many seconds",
                "schema": {"type": "number", "minimum": 0,
                           "maximum": options.waits.max_wait_s}}], **r)},
        "/jobs/{job_id}/cancel": {"post": _op("Cancel a new or processing job", {
            **job_200, **_errors(*write_401, 404, 409, 503)},
            parameters=[_job_id_param()], **w)},
        "/jobs/{job_id}/retry": {"post": _op("Send a failed job back to new", {
            **job_200, **_errors(*write_401, 404, 409, 503)},
            parameters=[_job_id_param()], **w)},
        "/stats": {"get": _op("Queue statistics (cached for about a second)", {
            "200": _json(_ref("Stats"), "Counts and rates"), **_errors(*read_401, 503)}, **r)},
        "/healthz": {"get": _op("The process is alive", {
            "200": _json(_ref("Health"), "Alive")}, secured=False)},
        "/readyz": {"get": _op("The database is reachable and the schema current", {
            "200": _json(_ref("Ready"), "Ready"), **_errors(503)}, secured=False)},
        "/metrics": {"get": _op("Prometheus metrics", {
            "200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors(*read_401, *create_403)}, **r)},
        "/openapi.json": {"get": _op("This document", {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}}, secured=False)},
    }
    paths.update(module_paths(auth_writes=auth_writes, auth_reads=auth_reads,
                              scoped=policy.scoped))
    paths.update(_flow_paths(w, r, write_401, read_401, scoped=policy.scoped))
    paths.update(schedule_paths(auth_writes=auth_writes, auth_reads=auth_reads,
                                scoped=policy.scoped))
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "boundq", "version": "0.1.0",
                 "description": "A bounded, fenced PostgreSQL job queue. Errors are "
                                '{"error": {"code", "message", "field"?}}.'},
        "paths": paths,
        "components": {"schemas": components},
    }
    if auth_writes:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc
