"""Group commit for single creates: concurrent `POST /jobs` share one INSERT statement.

Each request hands its validated job to the batcher and awaits its own row. A flush takes
everything waiting (up to `group_max_batch`) and inserts it with one statement
(`job_insert_batch`, autocommit: one transaction, one WAL flush). While a flush runs, new
requests gather for the next one, so at low load a batch is one job and adds no delay,
and under load the cost per job falls. At most `max_flushers` flushes run at once, which
leaves pool connections for reads. A request is answered only after its statement
committed, so every 2xx names a durable job.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row

from boundq.core import queue
from boundq.core.queries import Q
from boundq.core.validation import JobSpec
from boundq.server.errors import unavailable
from boundq.server.metrics import ApiMetrics
from boundq.server.options import ApiOptions
from boundq.server.pool import ApiPool

Row = dict[str, Any]
Result = tuple[Row, bool]  # (job, created); created=False: a live job held the dedupe_key
Pending = tuple[JobSpec, "asyncio.Future[Result]"]
_encoder = msgspec.json.Encoder()


def _item(spec: JobSpec) -> dict[str, Any]:
    return {"name": spec.name, "kind": spec.kind, "queue": spec.queue,
            "payload": msgspec.Raw(spec.payload_json),
            "priority": spec.priority, "run_at": spec.run_at, "delay_s": spec.delay_s,
            "max_attempts": spec.max_attempts, "timeout_s": spec.timeout_s,
            "dedupe_key": spec.dedupe_key, "trace_parent": spec.trace_parent}


async def insert_batch(conn: psycopg.AsyncConnection[Any], specs: list[JobSpec]) -> list[Result]:
    cur = conn.cursor(row_factory=dict_row)
    items = _encoder.encode([_item(spec) for spec in specs]).decode()
    await cur.execute(Q.job_insert_batch, {"items": items})
    by_ord = {int(row.pop("ord")): row for row in await cur.fetchall()}
    results: list[Result] = []
    for ord_, spec in enumerate(specs, start=1):
        row = by_ord.get(ord_)
        if row is not None:
            results.append((row, True))
        else:  # its dedupe_key is held by a live job (or by an earlier item of this batch)
            results.append(await queue.enqueue(conn, spec))
    return results


class CreateBatcher:
    def __init__(self, pool: ApiPool, options: ApiOptions, metrics: ApiMetrics) -> None:
        self.pool = pool
        self.options = options
        self.metrics = metrics
        # Commits that insert jobs take turns anyway (the insert trigger's NOTIFY holds a
        # lock through the commit), so two statements in flight keep the database busy
        # while the next batch gathers; more would only split batches.
        self.max_flushers = options.group_flushers or max(1, min(2, pool.size // 2))
        self._pending: list[Pending] = []
        self._flushers = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(self, spec: JobSpec) -> Result:
        if not self.options.group_commit:
            async with self.pool.connection() as conn:
                return await queue.enqueue(conn, spec)
        if len(self._pending) >= self.options.group_max_pending:
            raise unavailable("too many creates in flight; retry shortly")
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((spec, future))
        if self._flushers < self.max_flushers:
            self._flushers += 1
            task = asyncio.create_task(self._flush_loop(), name="boundq-api-group-commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _flush_loop(self) -> None:
        try:
            limit = self.options.group_max_batch
            while self._pending:
                batch = self._pending[:limit]
                del self._pending[:limit]
                await self._flush(batch)
        finally:
            self._flushers -= 1

    async def _flush(self, batch: list[Pending]) -> None:
        metrics = self.metrics
        try:
            async with self.pool.connection() as conn:
                try:
                    results = await insert_batch(conn, [spec for spec, _ in batch])
                except (psycopg.DataError, psycopg.IntegrityError):
                    # One item the database refuses must not sink the others: one by one.
                    await self._one_by_one(conn, batch)
                    return
        except asyncio.CancelledError:
            self._fail(batch, unavailable("the server is shutting down; retry shortly"))
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            self._fail(batch, exc)
            return
        metrics.group_batches += 1
        metrics.group_batch_size.observe(len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    @staticmethod
    def _fail(batch: list[Pending], exc: BaseException) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def _one_by_one(self, conn: psycopg.AsyncConnection[Any], batch: list[Pending]) -> None:
        for spec, future in batch:
            try:
                result = await queue.enqueue(conn, spec)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if not future.done():
                future.set_result(result)

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: let running flushes answer their requests."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True),
                                       timeout_s)
