"""Errors as JSON: `{"error": {"code", "message", "field"?}}` with the right status.

Every failure a client can cause is a 4xx naming what was wrong; an unreachable or busy
database is a 503 with Retry-After; anything else is logged here and answered with a
JSON 500 that carries no details (no traceback ever reaches a client).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import psycopg
from psycopg_pool import PoolTimeout, TooManyRequests
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from boundq.core.errors import (
    DedupeKeyTaken,
    InvalidTransition,
    JobNotFound,
    JobValidationError,
)

log = logging.getLogger("boundq.api")

_encoder = msgspec.json.Encoder()
_PATH = re.compile(r" - at `\$([^`]*)`$")
_NAMED = re.compile(r"(?:unknown|required) field `([^`]*)`")


class ApiError(Exception):
    """Raised by a route; becomes one JSON error response."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def json_response(content: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encoder.encode(content), status_code=status, headers=headers,
                    media_type="application/json")


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return {"error": detail}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: Mapping[str, str] | None = None,
                   extra: Mapping[str, Any] | None = None) -> Response:
    body = error_body(code, message, field)
    if extra:
        body.update(extra)
    return json_response(body, status, headers)


def unavailable(message: str, retry_after: int = 1, code: str = "unavailable") -> ApiError:
    return ApiError(503, code, message, headers={"Retry-After": str(retry_after)})


def validation_field(exc: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's message -> (field path like `payload.a[0]` or `body`, message)."""
    text = str(exc)
    match = _PATH.search(text)
    base = match[1].lstrip(".") if match else ""
    # msgspec writes a dict key as `[...]` (it does not say which): name the field up to it.
    base = base.split("[...]", 1)[0]
    message = text[: match.start()] if match else text
    named = _NAMED.search(message)
    if named:
        base = f"{base}.{named[1]}" if base else named[1]
    return base or "body", message


def _is_utf8(body: bytes | msgspec.Raw) -> bool:
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_failure(exc: Exception, body: bytes | msgspec.Raw) -> ApiError:
    """A body msgspec refused: malformed JSON is 400, a wrong field is 422.

    Invalid UTF-8 is told from the body, not from the exception: msgspec raised
    UnicodeDecodeError for it up to 0.22 and a DecodeError since 0.23."""
    if isinstance(exc, msgspec.ValidationError):
        field, message = validation_field(exc)
        return ApiError(422, "invalid_field", message, field)
    if isinstance(exc, RecursionError):
        return ApiError(400, "too_deep", "the JSON document is nested too deeply")
    if isinstance(exc, UnicodeDecodeError) or not _is_utf8(body):
        return ApiError(400, "invalid_utf8", "the body is not valid UTF-8")
    return ApiError(400, "malformed_json", f"malformed JSON: {exc}")


# --- exception handlers (Starlette calls these with the request and the exception) -----
async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers, exc.extra)


async def on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobValidationError)
    return error_response(422, "invalid_field", exc.message, exc.field)


async def on_not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "not_found", str(exc))


async def on_dedupe_taken(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DedupeKeyTaken)
    return error_response(409, "dedupe_key_taken", str(exc), "dedupe_key",
                          extra={"holder": exc.holder})


async def on_transition(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidTransition)
    return error_response(409, "invalid_transition", str(exc), "status")


async def on_db_rejected(request: Request, exc: Exception) -> Response:
    log.warning("the database refused a write that passed validation: %s", exc)
    return error_response(422, "rejected", "the database refused this input")


async def on_disconnect(request: Request, exc: Exception) -> Response:
    return error_response(400, "client_disconnected", "the client went away")


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def on_http(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (wrong method), as JSON."""
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"),
                          str(exc.detail), headers=exc.headers)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this answer, so uvicorn logs the traceback (once, on our
    # side); the client only learns that something failed.
    return error_response(500, "internal", "internal error")


def exception_handlers(on_pool_busy: Callable[[], None],
                       on_db_down: Callable[[BaseException], None]) -> dict[Any, Any]:
    """Starlette's exception handlers. The two callbacks let the API count a busy pool
    and mark the database down when a request meets a broken connection."""

    async def pool_busy(request: Request, exc: Exception) -> Response:
        on_pool_busy()
        return error_response(503, "busy", "all database connections are busy; retry shortly",
                              headers={"Retry-After": "1"})

    async def db_down(request: Request, exc: Exception) -> Response:
        on_db_down(exc)
        return error_response(503, "database_unavailable", "the database is unreachable; "
                              "retry shortly", headers={"Retry-After": "1"})

    async def rolled_back(request: Request, exc: Exception) -> Response:
        # A deadlock or serialization failure chose this write as its victim, every time it
        # was tried: nothing of it was written and the database is fine (not "down").
        log.warning("a write was rolled back by the database: %s", exc)
        return error_response(503, "write_conflict", "the write met concurrent work and was "
                              "rolled back; nothing was written, retry", headers={"Retry-After": "1"})

    return {
        ApiError: on_api_error,
        HTTPException: on_http,
        JobValidationError: on_validation,
        JobNotFound: on_not_found,
        InvalidTransition: on_transition,
        DedupeKeyTaken: on_dedupe_taken,
        PoolTimeout: pool_busy,
        TooManyRequests: pool_busy,
        psycopg.errors.DeadlockDetected: rolled_back,  # not TransactionRollback's in psycopg
        psycopg.errors.SerializationFailure: rolled_back,
        psycopg.OperationalError: db_down,
        psycopg.InterfaceError: db_down,
        psycopg.DataError: on_db_rejected,
        psycopg.IntegrityError: on_db_rejected,
        ClientDisconnect: on_disconnect,
        Exception: on_unexpected,
    }
