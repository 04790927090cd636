"""The ASGI app: routes over raw psycopg, strict JSON in and out.

`create_app(settings, url)` builds a Starlette app that owns its API pool (opened and
closed by the lifespan). `boundq serve` (server/serve.py) runs it in its own process,
beside the worker processes.
"""

from __future__ import annotations

import contextlib
import math
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

from boundq.core import queue, tracing
from boundq.core.config import Settings
from boundq.core.handlers import Registry
from boundq.core.metrics import CONTENT_TYPE, render_all
from boundq.core.migrate import LATEST_VERSION
from boundq.core.queries import Q
from boundq.core.states import TERMINAL
from boundq.core.validation import QUEUE_NAME, validate_job
from boundq.server import idempotency, tenancy
from boundq.server.admission import Door
from boundq.server.body import MAX_JOB_BODY, decode_job, read_body, require_json
from boundq.server.bulk import bulk_create
from boundq.server.errors import ApiError, error_response, exception_handlers, json_response
from boundq.server.event_stream import events
from boundq.server.flow import FLOW_ROUTES
from boundq.server.metrics import MetricsMiddleware
from boundq.server.modules import MODULE_ROUTES
from boundq.server.openapi import build_openapi
from boundq.server.options import ApiOptions
from boundq.server.pool import Conn
from boundq.server.schedules import SCHEDULE_ROUTES
from boundq.server.schemas import STATUSES
from boundq.server.state import ApiState
from boundq.server.stats import compute_stats
from boundq.server.ui import UI_ROUTES

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


def _query_seconds(request: Request, name: str, most: float) -> float | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = float(raw) if len(raw) <= 20 else math.nan
    except ValueError:
        value = math.nan
    if not 0 <= value <= most:  # NaN and infinities fail too
        raise ApiError(422, "invalid_field", f"must be a number of seconds from 0 to {most:g}",
                       name)
    return value


# --- jobs -----------------------------------------------------------------------------
async def create_job(request: Request) -> Response:
    state = _state(request)
    scope = state.auth.check(request, write=True)
    require_json(request)
    key = request.headers.get(idempotency.HEADER)
    if key is not None:
        idempotency.check_key(key)
    state.monitor.check_available()
    job = decode_job(await read_body(request, MAX_JOB_BODY, state.options.body_timeout_s))
    spec = validate_job(job.as_item(), state.registry, state.settings)
    scope.require_queue(spec.queue)
    await state.monitor.admit(spec.queue)  # MAX_QUEUE_DEPTH of this job's queue
    # tracing (core/tracing): the create span; the job stores its context (off: a no-op)
    with tracing.creating(request.headers, via="api", queue=spec.queue) as trace:
        spec.trace_parent = trace.trace_parent
        if key is None and not spec.has_dependencies:
            row, created = await state.batcher.create(spec)
            tenancy.check_created(spec, row, created, scope)
        elif key is None:
            # depends_on: its own transaction, which locks the parents (core/queue.py)
            async with state.connection() as conn:
                row, created = await queue.enqueue(conn, spec, queues=scope.queue_list())
        else:
            async with state.connection() as conn:
                row, created = await idempotency.create_idempotent(
                    conn, spec, key, idempotency.request_hash(job), scope)
        trace.created(row["id"], created)
    if created:
        state.monitor.note_created(spec.queue, 1)
        state.metrics.jobs_created += 1
        return json_response(row, 201, {"Location": f"/jobs/{row['id']}"})
    return json_response(row, 200)


async def get_job(request: Request) -> Response:
    state = _state(request)
    scope = state.auth.check(request, write=False)
    job_id = _job_id(request)
    state.monitor.check_available()

    wait_s = _query_seconds(request, "wait", state.options.waits.max_wait_s)

    async def read(conn: Conn) -> dict[str, Any]:
        row = await tenancy.get_job(conn, job_id, scope)
        row["attempt_history"] = await queue.job_attempts(conn, job_id)
        return row

    if not wait_s:
        # the replica while it is close behind; the primary when it does not have the job
        return json_response(await state.reads.read(read))
    # A long poll reads the primary: the answer must not be older than the wake-up.
    async with state.connection() as conn:
        row = await read(conn)
    if row["status"] in TERMINAL:
        return json_response(row)
    await state.waits.wait(job_id, wait_s)
    state.monitor.check_available()
    async with state.connection() as conn:
        return json_response(await read(conn))


async def list_jobs(request: Request) -> Response:
    state = _state(request)
    scope = state.auth.check(request, write=False)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise ApiError(422, "invalid_field", f"must be one of {', '.join(STATUSES)}", "status")
    kind = request.query_params.get("kind")
    if kind is not None and not (1 <= len(kind) <= 100 and "\x00" not in kind):
        raise ApiError(422, "invalid_field", "must be 1..100 characters without NUL", "kind")
    queue_name = request.query_params.get("queue")
    if queue_name is not None and QUEUE_NAME.fullmatch(queue_name) is None:
        raise ApiError(422, "invalid_field", "must be a queue name", "queue")
    if queue_name is not None and not scope.allows(queue_name):
        # The same answer for every queue outside the scope, whether it exists or not.
        raise ApiError(404, "not_found", f"queue {queue_name!r} not found", "queue")
    # A token of some queues reads them only (job_list_in_queues); a queue filter already
    # names one of them.
    queues = None if queue_name is not None else scope.queue_list()
    limit = _query_int(request, "limit", 1, state.options.page_max) or 50
    cursor = _query_int(request, "cursor", 1, MAX_ID)
    state.monitor.check_available()
    filtered = (status is not None or kind is not None or queue_name is not None
                or queues is not None)
    # Unfiltered, a page is the next `limit` ids. Filtered, it reads at most list_scan_max
    # rows below the cursor (job_list), so it may come back short; next_cursor then
    # continues below what was read.
    scan = state.options.list_scan_max if filtered else limit + 1

    async def read(conn: Conn) -> dict[str, Any]:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(Q.job_list if queues is None else Q.job_list_in_queues,
                          {"status": status, "kind": kind, "queue": queue_name,
                           "queues": queues, "before_id": cursor, "limit": limit + 1,
                           "scan": scan})
        rows = await cur.fetchall()
        next_cursor: int | None = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = rows[-1]["id"]
        elif filtered:
            next_cursor = await _scan_floor(conn, cursor, scan)
        return {"jobs": rows, "next_cursor": next_cursor}

    return json_response(await state.reads.read(read))


async def _scan_floor(conn: Any, before: int | None, scan: int) -> int | None:
    """The lowest id a bounded scan read (the next page starts below it); None when the
    scan reached the first job."""
    cur = await conn.execute(Q.job_list_scan_floor, {"before_id": before, "scan": scan})
    row = await cur.fetchone()
    if row is None or row[0] is None or int(row[1]) < scan:
        return None
    return int(row[0])


async def cancel_job(request: Request) -> Response:
    state = _state(request)
    scope = state.auth.check(request, write=True)
    job_id = _job_id(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        return json_response(await tenancy.cancel(conn, job_id, scope))


async def retry_job(request: Request) -> Response:
    state = _state(request)
    scope = state.auth.check(request, write=True)
    job_id = _job_id(request)
    state.monitor.check_available()
    # A retried job waits again: it counts against its queue's depth, so the queue is
    # read first (a job's queue never changes; another tenant's job is the same 404).
    async with state.connection() as conn:
        queue_name = str((await tenancy.get_job(conn, job_id, scope))["queue"])
    await state.monitor.admit(queue_name)
    async with state.connection() as conn:
        row = await tenancy.retry(conn, job_id, scope)
    state.monitor.note_created(queue_name, 1)
    return json_response(row)


# --- operations -----------------------------------------------------------------------
async def stats(request: Request) -> Response:
    """Cached for stats_cache_s (per scope): a dashboard polling it cannot load the
    database. A token of some queues sees those queues only."""
    state = _state(request)
    scope = state.auth.check(request, write=False)
    state.monitor.check_available()
    async with state.stats_lock:
        stats = state.cached_stats(scope.queues)
        if stats is None:
            queues = scope.queue_list()

            async def read(conn: Conn) -> dict[str, Any]:
                return await compute_stats(conn, queues)

            stats = await state.reads.read(read)
            state.stats_cache[scope.queues] = (time.monotonic(), stats)
    return json_response(stats)


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
    state.auth.check(request, write=False, admin=True)  # its counters sum every queue
    state.flush_metrics()
    return Response(render_all(), media_type=CONTENT_TYPE)


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
    Route("/events", events, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    *MODULE_ROUTES,
    *FLOW_ROUTES,
    *SCHEDULE_ROUTES,
    *UI_ROUTES,
]


def create_app(settings: Settings, url: str, *, options: ApiOptions | None = None,
               registry: Registry | None = None) -> Starlette:
    state = ApiState(settings, url, options, registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    def pool_busy() -> None:
        state.metrics.pool_busy += 1

    app = Starlette(
        routes=ROUTES, lifespan=lifespan,
        exception_handlers=exception_handlers(pool_busy, state.monitor.mark_down),
        middleware=[Middleware(MetricsMiddleware, metrics=state.metrics),
                    Middleware(Door, monitor=state.monitor, lag=state.lag,
                               options=state.options, metrics=state.metrics,
                               callers=state.auth)])
    app.state.api = state
    app.state.openapi = build_openapi(settings, state.options)
    return app
