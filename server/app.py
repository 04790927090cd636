"""The ASGI app: routes over raw psycopg, strict JSON in and out.

`create_app(settings, url)` builds a Starlette app that owns its API pool (opened and
closed by the lifespan). `boundq serve` (server/serve.py) runs it next to the workers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from boundq.core import queue
from boundq.core.config import Settings
from boundq.core.handlers import Registry
from boundq.core.metrics import Metrics
from boundq.core.migrate import LATEST_VERSION
from boundq.core.queries import Q
from boundq.core.validation import validate_job
from boundq.server import idempotency
from boundq.server.auth import authorize
from boundq.server.body import MAX_JOB_BODY, decode_job, read_body, require_json
from boundq.server.bulk import bulk_create
from boundq.server.errors import EXCEPTION_HANDLERS, ApiError, error_response, json_response
from boundq.server.metrics import MetricsMiddleware, render
from boundq.server.openapi import build_openapi
from boundq.server.schemas import STATUSES
from boundq.server.state import ApiOptions, ApiState

MAX_ID = 2**63 - 1


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


class JobIdConvertor(Convertor[int]):
    """At most 19 digits (a bigint): a longer "id" matches no route and is a 404, never
    an integer conversion error."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("job_id", JobIdConvertor())


def _job_id(request: Request) -> int:
    """The `{job_id:job_id}` path parameter; an id no job can have is a 404."""
    value = int(request.path_params["job_id"])
    if not 1 <= value <= MAX_ID:
        raise ApiError(404, "not_found", f"job {value} not found")
    return value


def _query_int(request: Request, name: str, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.lstrip("-").isdigit()) or len(raw) > 20:
        raise ApiError(422, "invalid_field", "must be an integer", name)
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(422, "invalid_field", f"must be between {lo} and {hi}", name)
    return value


# --- jobs -----------------------------------------------------------------------------
async def create_job(request: Request) -> Response:
    state = _state(request)
    authorize(request, state, write=True)
    require_json(request)
    key = request.headers.get(idempotency.HEADER)
    if key is not None:
        idempotency.check_key(key)
    state.monitor.check_available()
    job = decode_job(await read_body(request, MAX_JOB_BODY, state.options.body_timeout_s))
    spec = validate_job(job.as_item(), state.registry, state.settings)
    await state.monitor.admit(1)
    if key is None:
        row, created = await state.batcher.create(spec)
    else:
        async with state.connection() as conn:
            row, created = await idempotency.create_idempotent(
                conn, spec, key, idempotency.request_hash(job))
    if created:
        state.monitor.note_created(1)
        state.api_metrics.jobs_created += 1
        return json_response(row, 201, {"Location": f"/jobs/{row['id']}"})
    return json_response(row, 200)


async def get_job(request: Request) -> Response:
    state = _state(request)
    authorize(request, state, write=False)
    job_id = _job_id(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        row = await queue.get_job(conn, job_id)
        row["attempt_history"] = await queue.job_attempts(conn, job_id)
    return json_response(row)


async def list_jobs(request: Request) -> Response:
    state = _state(request)
    authorize(request, state, write=False)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_field", f"must be one of {', '.join(STATUSES)}", "status")
    kind = request.query_params.get("kind")
    if kind is not None and not (1 <= len(kind) <= 100 and "\x00" not in kind):
        raise ApiError(422, "invalid_field", "must be 1..100 characters without NUL", "kind")
    limit = _query_int(request, "limit", 1, state.options.page_max) or 50
    cursor = _query_int(request, "cursor", 1, MAX_ID)
    state.monitor.check_available()
    async with state.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(Q.job_list, {"status": status, "kind": kind, "before_id": cursor,
                                       "limit": limit + 1})
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response({"jobs": rows, "next_cursor": rows[-1]["id"] if more else None})


async def cancel_job(request: Request) -> Response:
    state = _state(request)
    authorize(request, state, write=True)
    job_id = _job_id(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        return json_response(await queue.cancel(conn, job_id))


async def retry_job(request: Request) -> Response:
    state = _state(request)
    authorize(request, state, write=True)
    job_id = _job_id(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        row = await queue.retry(conn, job_id)
    state.monitor.note_created(1)
    return json_response(row)


# --- operations -----------------------------------------------------------------------
async def _compute_stats(state: ApiState) -> dict[str, Any]:
    async with state.connection() as conn:
        counts = await queue.count_by_status(conn)
        cur = await conn.execute(Q.job_oldest_waiting)
        oldest = await cur.fetchone()
        cur = await conn.execute(Q.job_throughput_recent, {"window_s": 60.0})
        finished = await cur.fetchone()
    done = int(finished[0]) if finished else 0
    return {"counts": counts, "waiting": counts["new"],
            "oldest_waiting_age_s": oldest[0] if oldest else None,
            "in_flight": counts["processing"], "finished_last_minute": done,
            "throughput_per_s": round(done / 60.0, 3)}


async def stats(request: Request) -> Response:
    """Counts are cached for stats_cache_s: a dashboard polling it cannot load the DB."""
    state = _state(request)
    authorize(request, state, write=False)
    state.monitor.check_available()
    async with state.stats_lock:
        cached = state.stats_cache
        if cached is None or time.monotonic() - cached[0] > state.options.stats_cache_s:
            cached = state.stats_cache = (time.monotonic(), await _compute_stats(state))
    return json_response(cached[1])


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    monitor = _state(request).monitor
    if not monitor.up:
        return error_response(503, "database_unavailable", f"database unreachable: "
                              f"{monitor.error}", headers={"Retry-After": "1"})
    if not monitor.schema_current:
        return error_response(503, "schema_not_current", f"schema version "
                              f"{monitor.schema_version}, this build needs {LATEST_VERSION}; "
                              "run `boundq migrate`", headers={"Retry-After": "5"})
    return json_response({"status": "ready", "schema_version": monitor.schema_version,
                          "waiting": monitor.waiting})


async def metrics(request: Request) -> Response:
    state = _state(request)
    authorize(request, state, write=False)
    return Response(render(state), media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    return json_response(request.app.state.openapi)


ROUTES = [
    Route("/jobs", create_job, methods=["POST"]),
    Route("/jobs", list_jobs, methods=["GET"]),
    Route("/jobs/bulk", bulk_create, methods=["POST"]),
    Route("/jobs/{job_id:job_id}", get_job, methods=["GET"]),
    Route("/jobs/{job_id:job_id}/cancel", cancel_job, methods=["POST"]),
    Route("/jobs/{job_id:job_id}/retry", retry_job, methods=["POST"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]


def create_app(settings: Settings, url: str, *, options: ApiOptions | None = None,
               core_metrics: Metrics | None = None, registry: Registry | None = None
               ) -> Starlette:
    state = ApiState(settings, url, options, core_metrics, registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS,
                    middleware=[Middleware(MetricsMiddleware, metrics=state.api_metrics)])
    app.state.api = state
    app.state.openapi = build_openapi(settings, state.options)
    return app
