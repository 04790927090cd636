"""The application's client: enqueue, read, cancel and retry jobs from Python, on the
caller's own psycopg connection, so a job can be created in the same transaction as the
application's own rows (it exists if and only if that transaction commits).

    import boundq, psycopg

    client = boundq.Client()
    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute("INSERT INTO orders ...")
            job = await client.enqueue(conn, "send receipt", kind="send_email",
                                       payload={"order": 42})

Input is validated exactly as the HTTP API validates it (same fields, same limits, same
errors: `JobValidationError` names the field) and nothing is written when it fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from boundq.core import queue, tracing
from boundq.core.config import Settings, load_settings
from boundq.core.handlers import Registry, default_registry
from boundq.core.validation import JobSpec, validate_job

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]


class Client:
    """Stateless apart from its settings (defaults such as DEFAULT_MAX_ATTEMPTS) and the
    registry whose payload validators apply. Safe to share between tasks."""

    def __init__(self, settings: Settings | None = None, registry: Registry | None = None
                 ) -> None:
        self.settings = settings if settings is not None else load_settings(dotenv=None)
        self.registry = registry if registry is not None else default_registry

    def spec(self, item: Mapping[str, Any]) -> JobSpec:
        """Validate one job given as the fields of an API create body."""
        return validate_job(item, self.registry, self.settings, allow_status=False)

    async def enqueue(self, conn: Conn, name: str, *, kind: str = "noop",
                      payload: Mapping[str, Any] | None = None, **fields: Any) -> Row:
        """Create one job (fields as in `POST /jobs`: priority, run_at, delay, max_attempts,
        timeout, dedupe_key, ...). A live job holding the same dedupe_key is returned
        instead of a second one."""
        item = {"name": name, "kind": kind, "payload": dict(payload or {}), **fields}
        spec = self.spec(item)
        # tracing (core/tracing): a create span, child of the caller's current span
        with tracing.creating(queue=spec.queue) as trace:
            spec.trace_parent = trace.trace_parent
            row, created = await queue.enqueue(conn, spec)
            trace.created(row["id"], created)
        return row

    async def enqueue_many(self, conn: Conn, items: Sequence[Mapping[str, Any]]) -> list[int]:
        """Create many jobs in one transaction (all or none); their ids in input order."""
        specs = [self.spec(item) for item in items]
        with tracing.creating(count=len(specs)) as trace:  # tracing: one span for the batch
            trace.stamp(specs)
            return await queue.enqueue_many(conn, specs)

    async def get(self, conn: Conn, job_id: int) -> Row:
        """The job with its attempt history; JobNotFound when there is none."""
        row = await queue.get_job(conn, job_id)
        row["attempt_history"] = await queue.job_attempts(conn, job_id)
        return row

    async def cancel(self, conn: Conn, job_id: int) -> Row:
        """Cancel a waiting or running job (a running attempt's late writes are fenced out);
        InvalidTransition when it has already finished."""
        return await queue.cancel(conn, job_id)

    async def retry(self, conn: Conn, job_id: int) -> Row:
        """Run a dead-lettered (`failed`) job again, with one more attempt."""
        return await queue.retry(conn, job_id)
