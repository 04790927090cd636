"""The API's types: msgspec Structs that decode requests strictly and generate OpenAPI.

Decoding a request body into `JobCreate` checks JSON syntax, UTF-8, types, unknown
fields and the ranges declared here; core/validation.validate_job then checks what a
schema cannot say (NUL characters, blank names, payload depth and size, the payload of
each kind, the run_at horizon). Both report the offending field.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from boundq.core.validation import (
    MAX_ATTEMPTS,
    MAX_DELAY_S,
    MAX_KEY,
    MAX_NAME,
    MAX_TIMEOUT_S,
    QUEUE_NAME,
)

Status = Literal["scheduled", "blocked", "new", "processing", "success", "failed", "cancelled"]
Outcome = Literal["success", "error", "timeout", "lost", "cancelled"]
STATUSES: tuple[str, ...] = ("scheduled", "blocked", "new", "processing", "success", "failed",
                             "cancelled")

Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME, description="a label, not blank")]
Kind = Annotated[str, Meta(min_length=1, max_length=100, description="the handler to run")]
Timestamp = Annotated[datetime, Meta(tz=True)]  # RFC 3339 with a time zone


class JobCreate(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A job to create. `status`, when given, must be `new` (the seed sends it)."""

    name: Name
    kind: Kind = "noop"
    queue: Annotated[str, Meta(min_length=1, max_length=100, pattern=f"^{QUEUE_NAME.pattern}$",
                               description="the queue it waits in")] = "default"
    payload: Annotated[dict[str, Any], Meta(description="a JSON object for the handler")] | None = (
        None)
    priority: Annotated[int, Meta(ge=0, le=9, description="higher runs first")] | None = None
    run_at: Annotated[datetime, Meta(tz=True, description="RFC 3339, with a time zone")] | None = (
        None)
    delay: Annotated[float, Meta(ge=0, le=MAX_DELAY_S, description="seconds from now")] | None = (
        None)
    max_attempts: Annotated[int, Meta(ge=1, le=MAX_ATTEMPTS)] | None = None
    timeout: Annotated[float, Meta(gt=0, le=MAX_TIMEOUT_S, description="seconds per attempt")
                       ] | None = None
    dedupe_key: Annotated[str, Meta(min_length=1, max_length=MAX_KEY)] | None = None
    # Checked by core.validation (each problem names the field, a non-integer too).
    depends_on: Annotated[list[Any], Meta(description="ids of existing jobs this one waits "
                                          "for (at most 100): it stays `blocked` until every "
                                          "one reached success")] | None = None
    depends_on_index: Annotated[list[Any], Meta(
        description="bulk uploads only: positions (from 0) of other items of the same "
                    "upload this one waits for")] | None = None
    status: Literal["new"] | None = None

    def as_item(self) -> dict[str, Any]:
        """The fields that were given (not null), as plain JSON values, for
        core.validation.validate_job (omit_defaults drops the unset ones, in C)."""
        item: dict[str, Any] = msgspec.to_builtins(self)
        return item


class Job(msgspec.Struct):
    id: int
    name: str
    kind: str
    queue: str
    payload: Any
    status: Status
    priority: int
    run_at: Timestamp
    attempts: int
    max_attempts: int
    timeout_s: float | None
    dedupe_key: str | None
    lease_owner: str | None
    lease_expires_at: Timestamp | None
    last_error: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    updated_at: Timestamp
    result: Any  # what the handler returned (success only; else null)
    trace_parent: str | None  # W3C traceparent of the create span (tracing on; else null)
    blocked_by: int  # parents not yet in success (blocked jobs; else 0)
    has_dependants: bool  # some job depends on this one


class Attempt(msgspec.Struct):
    job_id: int
    attempt: int
    owner: str
    claimed_at: Timestamp
    finished_at: Timestamp | None
    outcome: Outcome | None
    error: str | None


class JobDetail(Job):
    """A job with its attempt history: one entry per claim, a running attempt last (with
    finished_at and outcome null)."""

    attempt_history: list[Attempt]


class JobPage(msgspec.Struct):
    """Newest first. Pass `next_cursor` as `cursor` for the next page; null = last page."""

    jobs: list[Job]
    next_cursor: int | None


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    field: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class BulkItemError(msgspec.Struct):
    index: int
    field: str
    message: str


class BulkResult(msgspec.Struct):
    created: int
    ids: list[int]
    errors: list[BulkItemError]


class BulkRejected(msgspec.Struct):
    """422 for a batch: nothing was written. `errors` lists each bad item."""

    error: ErrorDetail
    created: int
    ids: list[int]
    errors: list[BulkItemError]


class StatusCounts(msgspec.Struct):
    """Jobs per state. Finished states are kept counts (exact); waiting states are counted
    through their indexes up to `counts_capped_at` (a count at the cap means at least)."""

    scheduled: int
    blocked: int
    new: int
    processing: int
    success: int
    failed: int
    cancelled: int


class Stats(msgspec.Struct):
    counts: StatusCounts
    counts_capped_at: int
    waiting: int
    oldest_waiting_age_s: float | None
    in_flight: int
    finished_last_minute: int
    throughput_per_s: float  # jobs finished per second over the last 10 whole seconds
    pickup_p50_s: float | None  # claim - run_at over the last minute (bucket upper bounds)
    pickup_p99_s: float | None


class Health(msgspec.Struct):
    status: Literal["ok"]


class Ready(msgspec.Struct):
    status: Literal["ready"]
    schema_version: int
    waiting: int
