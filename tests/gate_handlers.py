"""Handlers for the metrics tests, loaded by the worker under test with
`boundq worker --handlers tests.gate_handlers` (never imported by pytest itself)."""

from __future__ import annotations

from boundq.core.handlers import JobContext, handler

GATE = 7_310_001  # the advisory lock the test holds while the jobs must wait


@handler("gate")
async def gate(job: JobContext) -> None:
    """Runs until the test lets go of advisory lock GATE (a shared lock: once it is free,
    every job passes at once), so each worker process holds its jobs as long as the test
    needs to see them running."""
    async with job.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock_shared(%s)", (GATE,))
        await conn.execute("SELECT pg_advisory_unlock_shared(%s)", (GATE,))
