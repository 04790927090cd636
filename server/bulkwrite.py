"""The bulk write: validate and COPY in one pipeline, inside one transaction.

Items are validated one by one and each valid one is written to an open COPY at once, so
PostgreSQL inserts rows (on the other core) while Python validates the next ones, instead
of the two taking turns. Ids are reserved up front, one per item, so the answer can list
them in input order (an invalid item's id is simply never used). Items with a dedupe_key
go through core.queue.enqueue_many after the COPY, in the same transaction.

Nothing is visible to anyone until the commit: an atomic batch with an invalid item, or a
batch with no valid item, raises BatchRejected inside the transaction, which rolls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg

from boundq.core import queue
from boundq.core.errors import JobValidationError
from boundq.core.queries import Q
from boundq.core.queue import _COPY_JOBS as COPY_JOBS  # COPY cannot be a PREPAREd named block
from boundq.core.validation import JobSpec
from boundq.server.errors import ApiError

YIELD_EVERY = 2000  # let other requests run during a long batch

Validate = Callable[[msgspec.Raw], JobSpec]


class BatchRejected(Exception):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid items")
        self.errors = errors


def _error(index: int, exc: ApiError | JobValidationError) -> dict[str, Any]:
    return {"index": index, "field": exc.field or "body", "message": exc.message}


async def write_bulk(conn: psycopg.AsyncConnection[Any], raws: Sequence[msgspec.Raw],
                     validate: Validate, atomic: bool) -> tuple[list[int], list[dict[str, Any]]]:
    """Returns (ids of the valid items in input order, errors of the invalid ones)."""
    ids: list[int | None] = [None] * len(raws)
    errors: list[dict[str, Any]] = []
    keyed: list[tuple[int, JobSpec]] = []
    async with conn.transaction():
        cur = await conn.execute(Q.job_reserve_ids, {"n": len(raws)})
        row = await cur.fetchone()
        assert row is not None
        db_now, reserved = row
        async with conn.cursor().copy(COPY_JOBS) as copy:
            for index, raw in enumerate(raws):
                if index % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                try:
                    spec = validate(raw)
                except (ApiError, JobValidationError) as exc:
                    errors.append(_error(index, exc))
                    continue
                if atomic and errors:
                    continue  # the batch is lost: only collect the remaining errors
                if spec.dedupe_key is not None:
                    keyed.append((index, spec))
                    continue
                await copy.write_row(queue.copy_row(reserved[index], spec, db_now))
                ids[index] = reserved[index]
        if errors and (atomic or (not keyed and not any(ids))):
            raise BatchRejected(errors)
        if keyed:
            keyed_ids = await queue.enqueue_many(conn, [spec for _, spec in keyed])
            for (index, _), job_id in zip(keyed, keyed_ids, strict=True):
                ids[index] = job_id
    return [job_id for job_id in ids if job_id is not None], errors
