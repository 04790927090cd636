"""The dashboard's routes under /ui: pages (GET) and the two actions (POST forms).

Actions go through the functions the API's endpoints use (boundq.server.tenancy.retry
and cancel, which check the caller's scope under the row's lock) on the API's pool, and
answer 303 back to the page they came from with a one-time message: an action that
cannot be done (the job moved on, or does not exist) is a message on the page, never an
error status.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from boundq.core.errors import DedupeKeyTaken, InvalidTransition, JobNotFound
from boundq.core.validation import QUEUE_NAME
from boundq.server import tenancy
from boundq.server.body import media_type, read_body
from boundq.server.errors import ApiError
from boundq.server.ui import access, data
from boundq.server.ui.charts import pickup_svg, throughput_svg
from boundq.server.ui.pages import error_page, page, redirect, render, state_of

MAX_ID = 2**63 - 1
FORM_MAX_BYTES = 8 * 1024
REFRESH_S = 5  # live pages re-read their tables this often (static/ui.js)
ACTIVE = ("scheduled", "blocked", "new", "processing")


def _job_id(value: Any) -> int:
    job_id = int(value)
    if not 1 <= job_id <= MAX_ID:
        raise ApiError(404, "not_found", f"job {job_id} not found")
    return job_id


def _cursor(request: Request) -> int | None:
    raw = request.query_params.get("cursor")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise ApiError(400, "bad_request", "cursor must be a job id")
    return _job_id(raw)


def _queue_filter(request: Request, viewer: access.Viewer) -> data.Scope:
    """The caller's scope, narrowed to `?queue=` when one is given."""
    name = request.query_params.get("queue") or None
    if name is None:
        return viewer.sql_scope()
    if QUEUE_NAME.fullmatch(name) is None:
        raise ApiError(400, "bad_request", "queue must be a queue name")
    return [name] if viewer.sees(name) else []


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the dashboard's own forms), size- and time-bounded."""
    kind, _ = media_type(request)
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(415, "unsupported_media_type", "send the form as "
                       "application/x-www-form-urlencoded")
    body = await read_body(request, FORM_MAX_BYTES, state_of(request).options.body_timeout_s)
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                              max_num_fields=16))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "the form could not be read") from None


# --- pages ----------------------------------------------------------------------------
@page
async def overview(request: Request) -> Response:
    viewer = access.viewer(request)
    state = state_of(request)
    state.monitor.check_available()
    async with state.connection() as conn, data.reading(conn):
        view = await data.overview(conn, viewer.sql_scope())
    return render(request, "overview.html", {
        "view": view, "throughput": throughput_svg(view.minutes),
        "pickup": pickup_svg(view.minutes), "refresh_s": REFRESH_S,
        "count_cap": data.COUNT_CAP, "next_window": data.KIND_NEXT_WINDOW,
        "finished_window": data.KIND_FINISHED_WINDOW})


@page
async def queue_page(request: Request) -> Response:
    viewer = access.viewer(request)
    name = request.path_params["name"]
    if QUEUE_NAME.fullmatch(name) is None or not viewer.sees(name):
        return error_page(request, 404, "Not found", f"no queue {name!r} here")
    state = state_of(request)
    state.monitor.check_available()
    async with state.connection() as conn, data.reading(conn):
        now = await data.db_now(conn)
        rows = await data.queue_rows(conn, [name])
        running = await data.running_jobs(conn, [name])
        next_up = await data.next_in_queue(conn, name)
    row = rows[0] if rows else data.QueueRow(name)
    return render(request, "queue.html", {
        "now": now, "q": row, "running": running, "next_up": next_up, "refresh_s": REFRESH_S,
        "page_size": data.PAGE_SIZE})


@page
async def failed(request: Request) -> Response:
    viewer = access.viewer(request)
    scope = _queue_filter(request, viewer)
    cursor = _cursor(request)
    state = state_of(request)
    state.monitor.check_available()
    async with state.connection() as conn, data.reading(conn):
        now = await data.db_now(conn)
        found = await data.failed_page(conn, scope, cursor)
    return render(request, "failed.html", {
        "now": now, "jobs": found.jobs, "next_cursor": found.next_cursor,
        "queue": request.query_params.get("queue") or "", "first_page": cursor is None})


@page
async def job_lookup(request: Request) -> Response:
    """The header's "open job" box: /ui/jobs?id=N goes to that job's page."""
    access.viewer(request)
    raw = (request.query_params.get("id") or "").strip().lstrip("#")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return error_page(request, 404, "Not found", "give a job id (a number)")
    return redirect(f"/ui/jobs/{_job_id(raw)}", request)


@page
async def job_page(request: Request) -> Response:
    viewer = access.viewer(request)
    job_id = _job_id(request.path_params["job_id"])
    state = state_of(request)
    state.monitor.check_available()
    async with state.connection() as conn, data.reading(conn):
        now = await data.db_now(conn)
        found = await data.job_detail(conn, viewer.sql_scope(), job_id)
    if found is None:
        return error_page(request, 404, "Not found", f"job {job_id} not found")
    job, attempts = found
    live = job["status"] in ACTIVE
    return render(request, "job.html", {"now": now, "job": job, "attempts": attempts,
                                        "active": live, "refresh_s": REFRESH_S if live else 0})


# --- actions --------------------------------------------------------------------------
async def _act(request: Request, action: str) -> Response:
    viewer = access.viewer(request)
    form = await read_form(request)
    access.check_csrf(request, form)
    job_id = _job_id(request.path_params["job_id"])
    back = access.safe_back(form.get("back"), f"/ui/jobs/{job_id}")
    state = state_of(request)
    state.monitor.check_available()
    async with state.connection() as conn:
        try:
            if action == "retry":
                retried = await tenancy.retry(conn, job_id, viewer.scope)
            else:
                await tenancy.cancel(conn, job_id, viewer.scope)
        except (JobNotFound, InvalidTransition, DedupeKeyTaken) as exc:
            return redirect(back, request, ("error", str(exc)))
    if action == "retry":
        state.monitor.note_created(str(retried["queue"]), 1)
        return redirect(back, request, ("ok", f"job {job_id} is waiting to run again"))
    return redirect(back, request, ("ok", f"job {job_id} cancelled"))


@page
async def retry(request: Request) -> Response:
    return await _act(request, "retry")


@page
async def cancel(request: Request) -> Response:
    return await _act(request, "cancel")


# --- login ----------------------------------------------------------------------------
@page
async def login_form(request: Request) -> Response:
    target = access.safe_back(request.query_params.get("next"))
    if not access.login_needed(request):
        return redirect(target, request)
    return render(request, "login.html", {"next": target, "error": None})


@page
async def login(request: Request) -> Response:
    form = await read_form(request)
    access.check_csrf(request, form)
    target = access.safe_back(form.get("next"))
    if not access.login_needed(request):  # open (no API_TOKEN), or logged in already
        return redirect(target, request)
    token = form.get("token", "").strip()
    if not token or not access.token_accepted(request, token):
        return render(request, "login.html", {"next": target,
                                              "error": "That token is not accepted."},
                      status=401)
    response = redirect(target, request)
    access.set_session(response, request, token)
    return response


@page
async def logout(request: Request) -> Response:
    form = await read_form(request)
    access.check_csrf(request, form)
    response = redirect("/ui/login", request)
    access.clear_session(response)
    return response


@page
async def not_found(request: Request) -> Response:
    if request.path_params.get("rest", "") == "":
        return redirect("/ui", request)
    return error_page(request, 404, "Not found", "There is no such page in the dashboard.")


UI_ROUTES: list[BaseRoute] = [
    Route("/ui", overview, methods=["GET"]),
    Route("/ui/queues/{name}", queue_page, methods=["GET"]),
    Route("/ui/failed", failed, methods=["GET"]),
    Route("/ui/jobs", job_lookup, methods=["GET"]),
    Route("/ui/jobs/{job_id:int}", job_page, methods=["GET"]),
    Route("/ui/jobs/{job_id:int}/retry", retry, methods=["POST"]),
    Route("/ui/jobs/{job_id:int}/cancel", cancel, methods=["POST"]),
    Route("/ui/login", login_form, methods=["GET"]),
    Route("/ui/login", login, methods=["POST"]),
    Route("/ui/logout", logout, methods=["POST"]),
    Mount("/ui/static", StaticFiles(packages=[("boundq.server.ui", "static")]), name="ui_static"),
    Route("/ui/{rest:path}", not_found, methods=["GET"]),
]
