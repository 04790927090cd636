"""`GET /openapi.json`: the contract, generated from the Structs that decode requests.

Component schemas come from msgspec (server/schemas.py); this module only lays out the
paths, parameters and the status codes each operation can answer. The document reflects
the running configuration: with API_TOKEN set, mutating operations declare bearer auth.
"""

from __future__ import annotations

from typing import Any

import msgspec

from boundq.core.config import Settings
from boundq.core.validation import MAX_KEY
from boundq.server import schemas as s
from boundq.server.modules import module_paths
from boundq.server.options import ApiOptions
from boundq.server.schedules import schedule_paths

MAX_ID = 2**63 - 1
_TYPES = [s.JobCreate, s.Job, s.JobDetail, s.JobPage, s.ErrorBody, s.BulkResult,
          s.BulkRejected, s.Stats, s.Health, s.Ready]
_ERRORS = {
    400: "Malformed JSON, invalid UTF-8, nesting too deep, or a malformed multipart body",
    401: "Missing or wrong `Authorization: Bearer <token>` (only when API_TOKEN is set)",
    404: "No such job",
    408: "The body did not arrive in time",
    409: "Conflict (see the message)",
    413: "The body is too large",
    415: "Unsupported Content-Type",
    422: "A field is invalid; `error.field` names it",
    429: "MAX_QUEUE_DEPTH jobs are waiting; retry after Retry-After seconds",
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


def build_openapi(settings: Settings, options: ApiOptions) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _TYPES, ref_template="#/components/schemas/{name}")
    auth_writes = bool(settings.api_token)
    auth_reads = auth_writes and options.protect_reads
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
                **_errors(400, *write_401, 408, 409, 413, 415, 422, 429, 503),
            }, parameters=[idem], requestBody={"required": True, "content": {
                "application/json": {"schema": _ref("JobCreate")}}}, **w),
            "get": _op("List jobs, newest first (keyset pagination)", {
                "200": _json(_ref("JobPage"), "A page of jobs"),
                **_errors(*read_401, 422, 503),
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
            **_errors(*read_401, 404, 503)}, parameters=[_job_id_param()], **r)},
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
            **_errors(*read_401)}, **r)},
        "/openapi.json": {"get": _op("This document", {
            "200": {"description": "OpenAPI 3.1", "content": {"application/json": {
                "schema": {"type": "object"}}}}}, secured=False)},
    }
    paths.update(module_paths(auth_writes=auth_writes, auth_reads=auth_reads))
    paths.update(schedule_paths(auth_writes=auth_writes, auth_reads=auth_reads))
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
