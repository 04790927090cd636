"""Jobs within a caller's Scope (server/auth.py).

A job of a queue outside the scope answers exactly as a job that does not exist (the
same 404 body), so a token never learns that another tenant's job exists. Cancel and
retry check the scope in the transaction of the change, under the row's lock, so no
race lets a change reach a job of another queue. A caller with every queue takes the
unscoped path of core.queue, unchanged.

What stays global, by the schema: dedupe keys and Idempotency-Keys are unique across
every queue. A key held by another queue's job is answered 409 without that job (no id,
no body), which says only that the key is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from boundq.core import queue
from boundq.core.errors import DedupeKeyTaken, InvalidTransition, JobNotFound
from boundq.core.queries import Q
from boundq.core.validation import JobSpec
from boundq.server.auth import Scope
from boundq.server.bulkwrite import BatchRejected, Validate, write_bulk
from boundq.server.errors import ApiError

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]
HELD_ELSEWHERE = "is held by a live job"


def hidden_holder(dedupe_key: str | None) -> ApiError:
    """A live job of another queue holds the key: 409, naming neither that job nor its
    queue (`holder` is null, as when the holder is gone)."""
    return ApiError(409, "dedupe_key_taken", f"dedupe_key {dedupe_key!r} {HELD_ELSEWHERE}",
                    "dedupe_key", extra={"holder": None})


def check_created(spec: JobSpec, row: Row, created: bool, scope: Scope) -> None:
    """After a create: `created=False` answers with the live job that holds the
    dedupe_key, which must then be one the caller may see."""
    if not created and not scope.allows(row["queue"]):
        raise hidden_holder(spec.dedupe_key)


async def get_job(conn: Conn, job_id: int, scope: Scope) -> Row:
    row = await queue.get_job(conn, job_id)
    if not scope.allows(row["queue"]):
        raise JobNotFound(job_id)
    return row


async def _lock(conn: Conn, job_id: int, scope: Scope) -> None:
    cur = await conn.execute(Q.job_lock_in_queues, {"id": job_id, "queues": scope.queue_list()})
    if await cur.fetchone() is None:
        raise JobNotFound(job_id)


async def cancel(conn: Conn, job_id: int, scope: Scope) -> Row:
    if scope.everything:
        return await queue.cancel(conn, job_id)
    async with conn.transaction():
        await _lock(conn, job_id, scope)
        return await queue.cancel(conn, job_id)


async def retry(conn: Conn, job_id: int, scope: Scope) -> Row:
    """core.queue.retry within the scope. Its statement runs here (not through
    queue.retry) because inside a transaction a unique violation aborts it: the
    follow-up reads happen after the rollback."""
    if scope.everything:
        return await queue.retry(conn, job_id)
    try:
        async with conn.transaction():
            await _lock(conn, job_id, scope)
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(Q.job_retry, {"id": job_id})
            row = await cur.fetchone()
            if row is None:
                current = await queue.get_job(conn, job_id)
                raise InvalidTransition(job_id, current["status"], "retry")
            return row
    except psycopg.errors.UniqueViolation:
        raise await _dedupe_taken(conn, job_id, scope) from None


async def _dedupe_taken(conn: Conn, job_id: int, scope: Scope) -> DedupeKeyTaken:
    current = await get_job(conn, job_id, scope)
    key = str(current["dedupe_key"])
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.job_get_active_by_dedupe_key, {"dedupe_key": key})
    holder = await cur.fetchone()
    visible = holder["id"] if holder is not None and scope.allows(holder["queue"]) else None
    return DedupeKeyTaken(job_id, key, visible)


# --- bulk ------------------------------------------------------------------------------
class _ScopedValidate:
    """Bulk's per-item validation, plus: an item for a queue outside the scope is an
    invalid item (field `queue`). Notes which items carry a dedupe_key: write_bulk
    validates every item once, in input order."""

    def __init__(self, validate: Validate, scope: Scope) -> None:
        self.validate = validate
        self.scope = scope
        self.keyed: list[bool] = []

    def __call__(self, raw: msgspec.Raw) -> JobSpec:
        self.keyed.append(False)
        spec = self.validate(raw)
        self.scope.require_queue(spec.queue)
        self.keyed[-1] = spec.dedupe_key is not None
        return spec


async def write_bulk_in_scope(conn: Conn, raws: Sequence[msgspec.Raw], validate: Validate,
                              atomic: bool, scope: Scope
                              ) -> tuple[list[int], list[dict[str, Any]]]:
    """server.bulkwrite.write_bulk within the scope. A dedupe_key held by a live job of
    another queue makes its item invalid instead of answering that job's id; that is
    checked inside the upload's transaction, so `atomic` still writes all or nothing."""
    if scope.everything:
        return await write_bulk(conn, raws, validate, atomic)
    checked = _ScopedValidate(validate, scope)
    async with conn.transaction():
        ids, errors = await write_bulk(conn, raws, checked, atomic, scope.queue_list())
        if len(checked.keyed) != len(raws):
            raise RuntimeError("write_bulk no longer validates each item once, in order")
        failed = {error["index"] for error in errors}
        valid = [index for index in range(len(raws)) if index not in failed]
        keyed_ids = [job_id for index, job_id in zip(valid, ids, strict=True)
                     if checked.keyed[index]]
        if not keyed_ids:
            return ids, errors
        cur = await conn.execute(Q.job_ids_outside_queues,
                                 {"ids": keyed_ids, "queues": scope.queue_list()})
        foreign = {int(row[0]) for row in await cur.fetchall()}
        if not foreign:
            return ids, errors
        kept: list[int] = []
        for index, job_id in zip(valid, ids, strict=True):
            if checked.keyed[index] and job_id in foreign:
                errors.append({"index": index, "field": "dedupe_key",
                               "message": HELD_ELSEWHERE})
            else:
                kept.append(job_id)
        errors.sort(key=lambda error: int(error["index"]))
        if atomic or not kept:
            raise BatchRejected(errors)  # rolls the whole upload back
        return kept, errors
