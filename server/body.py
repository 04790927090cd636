"""Request bodies: content type, size (declared and actual), a deadline, strict decoding."""

from __future__ import annotations

import asyncio

import msgspec
from starlette.requests import Request

from boundq.core.validation import MAX_PAYLOAD_BYTES
from boundq.server.errors import ApiError, decode_failure
from boundq.server.schemas import JobCreate

# A single create: the largest payload plus room for the other fields.
MAX_JOB_BODY = MAX_PAYLOAD_BYTES + 64 * 1024

job_decoder = msgspec.json.Decoder(JobCreate)
raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_CLOSE = {"Connection": "close"}


def media_type(request: Request) -> tuple[str, dict[str, str]]:
    """`Content-Type` split into its lowercased type and its parameters."""
    raw = request.headers.get("content-type", "")
    main, *rest = raw.split(";")
    params: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def require_json(request: Request) -> None:
    kind, params = media_type(request)
    if kind != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       "send the body as Content-Type: application/json")
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise ApiError(415, "unsupported_media_type", "JSON bodies must be UTF-8")


def too_large(limit: int) -> ApiError:
    return ApiError(413, "too_large", f"the body exceeds {limit} bytes", headers=_CLOSE)


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refused with 413 as soon as it is known to exceed `limit` (from
    Content-Length before reading, or while reading a chunked body) and with 408 when it
    does not arrive within `timeout_s`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise ApiError(400, "bad_request", "Content-Length is not a number", headers=_CLOSE)
        if int(declared) > limit:
            raise too_large(limit)
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large(limit)
    except TimeoutError:
        raise ApiError(408, "body_timeout", f"the body did not arrive within {timeout_s:g} s",
                       headers=_CLOSE) from None
    return bytes(body)


def decode_job(body: bytes) -> JobCreate:
    if not body:
        raise ApiError(400, "malformed_json", "the body is empty; send a JSON object")
    try:
        return job_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
            RecursionError) as exc:
        raise decode_failure(exc, body) from None


def decode_items(body: bytes) -> list[msgspec.Raw]:
    """A JSON array whose items are decoded one by one later (each may fail alone)."""
    if not body.strip():
        raise ApiError(400, "malformed_json", "the body is empty; send a JSON array of jobs")
    try:
        return raw_list_decoder.decode(body)
    except msgspec.ValidationError:
        raise ApiError(422, "invalid_field", "must be a JSON array of jobs", "body") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise decode_failure(exc, body) from None


def decode_item(raw: msgspec.Raw) -> JobCreate:
    try:
        return job_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
            RecursionError) as exc:
        raise decode_failure(exc, raw) from None
