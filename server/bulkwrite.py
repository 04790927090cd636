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
                     validate: Validate, atomic: bool, queues: Sequence[str] | None = None
                     ) -> tuple[list[int], list[dict[str, Any]]]:
    """Returns (ids of the valid items in input order, errors of the invalid ones).
    `queues` (None: any) bounds the existing jobs an item may name in depends_on."""
    ids: list[int | None] = [None] * len(raws)
    errors: list[dict[str, Any]] = []
    keyed: list[tuple[int, JobSpec]] = []
    dependent: dict[int, JobSpec] = {}  # written after every item is known (a 2nd COPY)
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
                    _check_indexes(spec, index, len(raws))
                except (ApiError, JobValidationError) as exc:
                    errors.append(_error(index, exc))
                    continue
                if atomic and errors:
                    continue  # the batch is lost: only collect the remaining errors
                if spec.has_dependencies:
                    dependent[index] = spec
                    continue
                if spec.dedupe_key is not None:
                    keyed.append((index, spec))
                    continue
                await copy.write_row(queue.copy_row(reserved[index], spec, db_now))
                ids[index] = reserved[index]
        if dependent and not (atomic and errors):
            found = await queue.lock_parents(
                conn, (p for spec in dependent.values() for p in spec.depends_on), queues)
            errors.extend(_settle_dependent(dependent, found, {e["index"] for e in errors},
                                            {i for i, _ in keyed}))
            errors.sort(key=lambda error: int(error["index"]))
        if errors and (atomic or (not keyed and not dependent and not any(ids))):
            raise BatchRejected(errors)
        if keyed:
            keyed_ids = await queue.enqueue_many(conn, [spec for _, spec in keyed])
            for (index, _), job_id in zip(keyed, keyed_ids, strict=True):
                ids[index] = job_id
        if dependent:
            async with conn.cursor().copy(COPY_JOBS) as copy:
                for index, spec in dependent.items():
                    await copy.write_row(queue.copy_row(reserved[index], spec, db_now))
                    ids[index] = reserved[index]
            await queue.link_dependencies(conn, [
                (reserved[index], parent) for index, spec in dependent.items()
                for parent in (*spec.depends_on, *(reserved[i] for i in spec.depends_on_index))])
    return [job_id for job_id in ids if job_id is not None], errors


def _check_indexes(spec: JobSpec, index: int, count: int) -> None:
    for target in spec.depends_on_index:
        if target >= count:
            raise JobValidationError("depends_on_index", f"{target} is not an item of this "
                                     f"upload (0..{count - 1})")
        if target == index:
            raise JobValidationError("depends_on_index", "an item cannot depend on itself")


def _settle_dependent(dependent: dict[int, JobSpec], found: dict[int, str], invalid: set[int],
                      keyed: set[int]) -> list[dict[str, Any]]:
    """Removes from `dependent` (and returns the errors of) the items that cannot be
    written: one naming a missing job, one that depends on an invalid item or an item
    with a dedupe_key (whose id may be another job's), and the items of a cycle."""
    errors: list[dict[str, Any]] = []

    def drop(index: int, field: str, message: str) -> None:
        del dependent[index]
        invalid.add(index)
        errors.append({"index": index, "field": field, "message": message})

    for index, spec in list(dependent.items()):
        missing = [p for p in spec.depends_on if p not in found]
        if missing:
            drop(index, "depends_on", queue.missing_parent_error(missing[0]).message)
    changed = True
    while changed:  # an item that depends on a dropped item is dropped in turn
        changed = False
        for index, spec in list(dependent.items()):
            bad = [t for t in spec.depends_on_index if t in invalid or t in keyed]
            if bad:
                what = "has a dedupe_key" if bad[0] in keyed else "is invalid"
                drop(index, "depends_on_index", f"item {bad[0]} {what}")
                changed = True
    # What is left of the in-upload edges: peel off the items whose targets are all
    # written or peeled; what cannot be peeled is on (or behind) a cycle.
    done: set[int] = set()
    progress = True
    while progress:
        progress = False
        for index, spec in dependent.items():
            if index not in done and all(t not in dependent or t in done
                                         for t in spec.depends_on_index):
                done.add(index)
                progress = True
    for index in sorted(set(dependent) - done):
        drop(index, "depends_on_index", "forms a cycle with other items of this upload")
    return errors
