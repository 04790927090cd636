"""Rendering: Jinja2 templates (autoescaped), the headers every page carries, the error
pages, and the wrapper that turns what can go wrong into a page instead of a traceback.

A page answers within the API's rules: the database monitor refuses at once while the
database is down (503 page that retries itself), a pool that is busy for longer than the
API's wait is a 503 too, and a broken connection marks the database down as it does for
the API. Nothing a browser can cause is a 500.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import psycopg
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from psycopg_pool import PoolTimeout, TooManyRequests
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from boundq.server.errors import ApiError
from boundq.server.state import ApiState
from boundq.server.ui import access
from boundq.server.ui.charts import format_seconds

log = logging.getLogger("boundq.ui")

Handler = Callable[[Request], Awaitable[Response]]

# Pages carry data: never cached, never framed, no script or style from anywhere else.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
                               "img-src 'self'; connect-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _number(value: Any) -> str:
    n, capped = (value.n, value.capped) if hasattr(value, "capped") else (int(value), False)
    return f"{n:,}+" if capped else f"{n:,}"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return ""
    seconds = (now - value).total_seconds()
    if abs(seconds) < 90:
        return f"{seconds:.0f} s" if seconds >= 0 else f"in {-seconds:.0f} s"
    minutes = seconds / 60
    if abs(minutes) < 90:
        return f"{minutes:.0f} min" if minutes >= 0 else f"in {-minutes:.0f} min"
    return f"{minutes / 60:.1f} h" if minutes >= 0 else f"in {-minutes / 60:.1f} h"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("boundq.server.ui", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_number, when=_when, ago=_ago, seconds=format_seconds,
                       pretty=_pretty)
    return env


templates = Jinja2Templates(env=_environment())


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def render(request: Request, name: str, context: dict[str, Any], status: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    """A page: the template with what every page needs (the CSRF token, the message a
    redirect left, where forms send the browser back to), and the security headers."""
    base: dict[str, Any] = {"csrf": access.csrf_token(request),
                            "flash": access.read_flash(request), "back": _here(request),
                            "logged_in": access.session_token(request) is not None,
                            "refresh_s": 0, "retry_s": 0}
    base.update(context)
    response = templates.TemplateResponse(request, name, base, status_code=status,
                                          headers={**SECURITY_HEADERS, **(headers or {})})
    access.clear_flash(request, response)
    access.keep_csrf(request, response)
    return response


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def error_page(request: Request, status: int, title: str, message: str,
               headers: dict[str, str] | None = None, retry_s: int = 0) -> Response:
    return render(request, "error.html", {"title": title, "message": message,
                                          "status": status, "retry_s": retry_s},
                  status=status, headers=headers)


def redirect(target: str, request: Request, flash: tuple[str, str] | None = None) -> Response:
    """303 See Other: the browser follows with a GET (post/redirect/get)."""
    response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
    if flash is not None:
        access.set_flash(response, request, *flash)
    return response


def page(handler: Handler) -> Handler:
    """Run a dashboard handler; what can go wrong becomes a page, never a traceback."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        state = state_of(request)
        try:
            return await handler(request)
        except access.LoginRequired:
            target = access.safe_back(_here(request)) if request.method == "GET" else "/ui"
            return redirect(f"/ui/login?next={_quote(target)}", request)
        except access.CsrfRejected:
            return error_page(request, 403, "Form expired",
                              "This form was not sent from this dashboard's page, or the "
                              "page is too old. Reload the page and try again.")
        except ApiError as exc:
            retry = 1 if exc.status == 503 else 0
            return error_page(request, exc.status, _TITLES.get(exc.status, "Refused"),
                              exc.message, headers=exc.headers, retry_s=retry)
        except (PoolTimeout, TooManyRequests):
            state.metrics.pool_busy += 1
            return error_page(request, 503, "Busy", "All database connections are busy; "
                              "this page retries shortly.", {"Retry-After": "1"}, retry_s=1)
        except psycopg.errors.QueryCanceled:
            return error_page(request, 503, "Busy", "The database took too long to answer; "
                              "this page retries shortly.", {"Retry-After": "1"}, retry_s=2)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            state.monitor.mark_down(exc)
            return _unavailable(request)
        except Exception:
            log.exception("dashboard: unexpected error on %s %s", request.method,
                          request.url.path)
            return error_page(request, 500, "Internal error",
                              "Something went wrong on the server; it has been logged.")

    return run


_TITLES = {400: "Bad request", 404: "Not found", 408: "Too slow", 413: "Too large",
           415: "Unsupported form", 503: "Database unavailable"}


def _unavailable(request: Request) -> Response:
    return error_page(request, 503, "Database unavailable",
                      "The database is unreachable; this page retries every few seconds.",
                      {"Retry-After": "1"}, retry_s=2)


def _quote(target: str) -> str:
    return quote(target, safe="/")
