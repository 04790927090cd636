"""Who may see the dashboard, and what: the session cookie, the CSRF token, the scope.

A browser cannot send the API's `Authorization: Bearer` header from a link, so the login
form takes the token once and keeps it in an HttpOnly, SameSite=Strict cookie scoped to
/ui. Every request then asks the API's own Authorizer, as if the cookie's token had come
in that header: one rule decides for the API and for the dashboard, and with no token
configured (API_TOKEN, API_TOKENS) both are open. The dashboard asks for the token on reads too (it shows
payloads and errors), whatever ApiOptions.protect_reads says.

`visible_queues` is the one place that turns a request into the queues its caller may
see and act on, from the Scope the Authorizer gives its token: a token of API_TOKENS
scoped to some queues sees only those queues' jobs and counts, and a job of another
queue is "not found". Every list and every action of the dashboard is filtered through
it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from boundq.server.auth import Scope
from boundq.server.errors import ApiError
from boundq.server.state import ApiState

SESSION_COOKIE = "boundq_ui_session"
CSRF_COOKIE = "boundq_ui_csrf"
FLASH_COOKIE = "boundq_ui_flash"
COOKIE_PATH = "/ui"
FLASH_MAX_CHARS = 300


class LoginRequired(Exception):
    """The request carries no token the Authorizer accepts."""


class CsrfRejected(Exception):
    """A form was posted without the session's CSRF token, or from another origin."""


@dataclass(frozen=True, slots=True)
class Viewer:
    """A caller the dashboard let in: the queues it may see (None: every queue)."""

    queues: frozenset[str] | None

    def sees(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    def sql_scope(self) -> list[str] | None:
        """The `queues` parameter of the read model's blocks."""
        return None if self.queues is None else sorted(self.queues)

    @property
    def scope(self) -> Scope:
        """The API's Scope of these queues, for the actions (server/tenancy.py)."""
        return Scope(self.queues)


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogateescape")).decode("ascii")


def _decode(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        return None


def _scope_for(request: Request, token: str | None) -> Scope | None:
    """The Scope the API's Authorizer gives this token as a writer, on a copy of the
    request whose Authorization header carries it (no header when token is None); None
    when it refuses."""
    headers = [(k, v) for k, v in request.scope["headers"] if k != b"authorization"]
    if token is not None:
        try:
            headers.append((b"authorization", b"Bearer " + token.encode("latin-1")))
        except UnicodeEncodeError:
            return None  # no HTTP header could carry it: the API would refuse it too
    probe = Request({**request.scope, "headers": headers})
    try:
        return _state(request).auth.check(probe, write=True)
    except ApiError:
        return None


def token_accepted(request: Request, token: str | None) -> bool:
    """Would the API let this token write?"""
    return _scope_for(request, token) is not None


def session_token(request: Request) -> str | None:
    raw = request.cookies.get(SESSION_COOKIE)
    return _decode(raw) if raw else None


def caller_scope(request: Request) -> Scope | None:
    """The caller's Scope (server/auth.py), from a token the API accepts in an
    Authorization header (scripts) or in the session cookie (browsers); ALL when the
    dashboard is open (no token configured); None when it must log in."""
    if request.headers.get("authorization"):
        try:
            return _state(request).auth.check(request, write=True)
        except ApiError:
            pass
    return _scope_for(request, session_token(request))


def login_needed(request: Request) -> bool:
    return caller_scope(request) is None


def visible_queues(request: Request) -> frozenset[str] | None:
    """The queues this caller may see and act on, from its token's Scope (API_TOKEN and
    API_TOKENS entries with "*": None, every queue); LoginRequired without a token the
    API accepts."""
    scope = caller_scope(request)
    if scope is None:
        raise LoginRequired
    return scope.queues


def viewer(request: Request) -> Viewer:
    """The caller, or LoginRequired."""
    return Viewer(visible_queues(request))


# --- cookies --------------------------------------------------------------------------
def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, _encode(token), path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=_secure(request))


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (double submit: a cookie and a hidden field that must
    match). A browser without one gets a new one, set by `keep_csrf` on the response."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) < 32:
        token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


def keep_csrf(request: Request, response: Response) -> None:
    new = getattr(request.state, "new_csrf", None)
    if new:
        response.set_cookie(CSRF_COOKIE, new, path=COOKIE_PATH, httponly=True,
                            samesite="strict", secure=_secure(request))


def check_csrf(request: Request, form: dict[str, str]) -> None:
    """A posted form must carry the cookie's CSRF token and, when the browser names its
    origin, come from this one."""
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CsrfRejected
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = form.get("csrf", "")
    if len(cookie) < 32 or not hmac.compare_digest(cookie.encode(), given.encode()):
        raise CsrfRejected


def set_flash(response: Response, request: Request, level: str, text: str) -> None:
    """A one-time message for the page the redirect leads to."""
    value = _encode(f"{level}:{text[:FLASH_MAX_CHARS]}")
    response.set_cookie(FLASH_COOKIE, value, max_age=60, path=COOKIE_PATH, httponly=True,
                        samesite="strict", secure=_secure(request))


def read_flash(request: Request) -> tuple[str, str] | None:
    """The message a redirect left for this page ("ok" or "error", text), if any."""
    raw = request.cookies.get(FLASH_COOKIE)
    decoded = _decode(raw) if raw else None
    if decoded is None or ":" not in decoded:
        return None
    level, text = decoded.split(":", 1)
    return (level if level in ("ok", "error") else "error"), text


def clear_flash(request: Request, response: Response) -> None:
    """A message is shown once: the page that shows it deletes its cookie."""
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path=COOKIE_PATH, httponly=True,
                               samesite="strict")


def safe_back(target: str | None, default: str = "/ui") -> str:
    """Where a form may send the browser back to: a path of the dashboard, nothing else."""
    if not target or "\\" in target or any(ord(c) < 0x20 for c in target):
        return default
    if target == "/ui" or target.startswith(("/ui/", "/ui?")):
        return target
    return default
