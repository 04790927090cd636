"""`POST /jobs/bulk`: a JSON array of jobs, as a multipart upload or a plain JSON body.

Every item is decoded and validated on its own; the valid ones are written in one
transaction with COPY (server/bulkwrite.py). The answer lists the ids of the valid items
in input order and an error for each invalid one. `?atomic=true`: one invalid item and
nothing is written (422, with every item's error).
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from boundq.core import queue, tracing
from boundq.core.validation import JobSpec, validate_job
from boundq.server.body import decode_item, decode_items, media_type, read_body, require_json, too_large
from boundq.server.bulkwrite import BatchRejected, Validate
from boundq.server.errors import ApiError, json_response
from boundq.server.multipart import file_part
from boundq.server.state import ApiState
from boundq.server.tenancy import write_bulk_in_scope

MULTIPART_OVERHEAD = 64 * 1024


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise ApiError(422, "invalid_field", "must be true or false", name)


async def _read_items(request: Request, state: ApiState) -> list[msgspec.Raw]:
    limit = state.settings.max_bulk_bytes
    timeout_s = state.options.bulk_body_timeout_s
    kind, params = media_type(request)
    if kind == "multipart/form-data":
        body = await read_body(request, limit + MULTIPART_OVERHEAD, timeout_s)
        content = file_part(body, params.get("boundary"), state.options.max_multipart_parts)
        if len(content) > limit:
            raise too_large(limit)
    elif kind == "application/json":
        require_json(request)
        content = await read_body(request, limit, timeout_s)
    else:
        raise ApiError(415, "unsupported_media_type", "send a JSON array as "
                       "application/json, or upload it as multipart/form-data (-F file=@...)")
    return decode_items(content)


def _validator(state: ApiState) -> Validate:
    registry, settings = state.registry, state.settings

    def validate(raw: msgspec.Raw) -> JobSpec:
        return validate_job(decode_item(raw).as_item(), registry, settings, in_upload=True)

    return validate


async def bulk_create(request: Request) -> Response:
    state: ApiState = request.app.state.api
    scope = state.auth.check(request, write=True)
    atomic = _flag(request, "atomic")
    state.monitor.check_available()
    raws = await _read_items(request, state)
    if not raws:
        raise ApiError(422, "invalid_field", "the array holds no jobs", "body")
    await state.monitor.admit(len(raws))
    try:
        # tracing (core/tracing): one create span for the batch; every job stores it
        with tracing.creating(request.headers, count=len(raws), via="bulk") as trace:
            async with state.connection() as conn:
                # A deadlock's victim wrote nothing (its transaction rolled back, with
                # the scope's outer one): the whole upload runs again, validation too.
                ids, errors = await queue.retrying_deadlocks(
                    lambda: write_bulk_in_scope(
                        conn, raws, trace.stamping(_validator(state)), atomic, scope))
    except BatchRejected as rejected:
        errors = rejected.errors
        first = errors[0]
        what = "nothing was written" if atomic else "no item was valid"
        raise ApiError(422, "invalid_items", f"{len(errors)} of {len(raws)} items are invalid; "
                       f"{what}", f"[{first['index']}].{first['field']}",
                       extra={"created": 0, "ids": [], "errors": errors}) from None
    state.monitor.note_created(len(ids))
    state.metrics.jobs_created += len(ids)
    return json_response({"created": len(ids), "ids": ids, "errors": errors}, 201)
