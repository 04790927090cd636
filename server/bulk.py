"""`POST /jobs/bulk`: a JSON array of jobs, as a multipart upload or a plain JSON body.

Every item is decoded and validated on its own; the valid ones are written in one
transaction with COPY (server/bulkwrite.py). The answer lists the ids of the valid items
in input order and an error for each invalid one. `?atomic=true`: one invalid item and
nothing is written (422, with every item's error).

MAX_QUEUE_DEPTH is per queue, and an upload may name several queues: an item whose queue
is full is refused like an invalid item (`field: queue`), so without `atomic` the other
items are written and with it nothing is. When every refused item was refused for a full
queue, the answer is 429 `queue_full` (Retry-After: retrying later may succeed) instead
of 422 (the items must change), with the same `created`/`ids`/`errors` body.
"""

from __future__ import annotations

from collections import Counter

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from boundq.core import queue, tracing
from boundq.core.validation import DEFAULT_QUEUE, JobSpec, validate_job
from boundq.server.auth import Scope
from boundq.server.body import decode_item, decode_items, media_type, read_body, require_json, too_large
from boundq.server.bulkwrite import BatchRejected
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


class _QueueOnly(msgspec.Struct):
    queue: object = DEFAULT_QUEUE


_queue_decoder = msgspec.json.Decoder(_QueueOnly)


def _refuse_if_every_item_full(raws: list[msgspec.Raw], state: ApiState, scope: Scope,
                               atomic: bool) -> None:
    """A flood into a full queue is refused before a connection is taken: when every item
    names a full queue of the caller's scope (read from the item's `queue` alone, about a
    microsecond each), nothing could be written, atomic or not. Anything else (an item
    of another queue, one that does not decode) goes the whole way, item by item."""
    depths = state.monitor.depths
    if not depths.full_queues():
        return
    queues: list[str] = []
    for raw in raws:
        try:
            name = _queue_decoder.decode(raw).queue
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError,
                RecursionError):
            return
        if not (isinstance(name, str) and scope.allows(name) and depths.counted_full(name)):
            return
        queues.append(name)
    limit = depths.limit
    errors: list[dict[str, object]] = [
        {"index": i, "field": "queue", "message": f"queue {name!r} is full "
         f"(MAX_QUEUE_DEPTH={limit}, per queue); retry later"} for i, name in enumerate(queues)]
    state.metrics.queue_full += 1
    raise _rejection(errors, len(raws), atomic, len(errors), state.options.retry_after_s)


class _Validator:
    """Validates an item and refuses it when its queue is full (the figures were
    confirmed just before: no query per item). The scope is checked first, so a tenant
    never learns whether another tenant's queue is full. Counts what it let through per queue, for
    the depth figures, and how many items it refused for a full queue."""

    def __init__(self, state: ApiState, scope: Scope) -> None:
        self.registry, self.settings, self.monitor = state.registry, state.settings, state.monitor
        self.scope = scope
        self.admitted: Counter[str] = Counter()
        self.refused_full = 0

    def fresh(self) -> _Validator:
        """Counts from zero for another attempt of the same upload."""
        self.admitted = Counter()
        self.refused_full = 0
        return self

    def __call__(self, raw: msgspec.Raw) -> JobSpec:
        spec = validate_job(decode_item(raw).as_item(), self.registry, self.settings,
                            in_upload=True)
        self.scope.require_queue(spec.queue)
        try:
            self.monitor.refuse_if_full(spec.queue)
        except ApiError:
            self.refused_full += 1
            raise
        self.admitted[spec.queue] += 1
        return spec


async def bulk_create(request: Request) -> Response:
    state: ApiState = request.app.state.api
    scope = state.auth.check(request, write=True)
    atomic = _flag(request, "atomic")
    state.monitor.check_available()
    raws = await _read_items(request, state)
    if not raws:
        raise ApiError(422, "invalid_field", "the array holds no jobs", "body")
    await state.monitor.confirm_full_queues()
    _refuse_if_every_item_full(raws, state, scope, atomic)
    validator = _Validator(state, scope)
    try:
        # tracing (core/tracing): one create span for the batch; every job stores it
        with tracing.creating(request.headers, count=len(raws), via="bulk") as trace:
            async with state.connection() as conn:
                # A deadlock's victim wrote nothing (its transaction rolled back, with
                # the scope's outer one): the whole upload runs again, validation too,
                # with a fresh validator (its counts are of the attempt that committed).
                ids, errors = await queue.retrying_deadlocks(
                    lambda: write_bulk_in_scope(
                        conn, raws, trace.stamping(validator.fresh()), atomic, scope))
    except BatchRejected as rejected:
        raise _rejection(rejected.errors, len(raws), atomic, validator.refused_full,
                         state.options.retry_after_s) from None
    for queue_name, n in validator.admitted.items():
        state.monitor.note_created(queue_name, n)
    state.metrics.jobs_created += len(ids)
    return json_response({"created": len(ids), "ids": ids, "errors": errors}, 201)


def _rejection(errors: list[dict[str, object]], count: int, atomic: bool, refused_full: int,
               retry_after_s: int) -> ApiError:
    """Nothing was written: 429 when only full queues refused items, else 422."""
    first = errors[0]
    what = "nothing was written" if atomic else "no item was valid"
    body: dict[str, object] = {"created": 0, "ids": [], "errors": errors}
    field = f"[{first['index']}].{first['field']}"
    if refused_full == len(errors):
        return ApiError(429, "queue_full", f"{len(errors)} of {count} items name a full queue "
                        f"(MAX_QUEUE_DEPTH, per queue); {what}; retry later", field,
                        headers={"Retry-After": str(retry_after_s)}, extra=body)
    return ApiError(422, "invalid_items", f"{len(errors)} of {count} items are invalid; "
                    f"{what}", field, extra=body)
