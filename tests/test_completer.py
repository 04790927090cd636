"""The completer writes each reported outcome exactly once, even when two flushes run at
once (at shutdown, stop() flushes while the completer's own loop may still be running)."""

from __future__ import annotations

import asyncio

from boundq.core import queue
from boundq.core.claim import Claim
from boundq.core.completer import Completer, Ledger
from boundq.core.db import open_pool
from boundq.core.loops import LoopSettings
from boundq.core.metrics import Metrics
from boundq.core.permits import Permits
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome
from tests.conftest import fast_settings
from tests.helpers import add_jobs, scalar


async def test_concurrent_flushes_write_each_outcome_once(db_url, conn) -> None:
    settings = fast_settings()
    await add_jobs(conn, 3, kind="effect")
    owner = "completer-test"
    rows = await queue.claim(conn, owner, 3, 30.0)
    pool = await open_pool(db_url, settings, "worker", max_size=4)
    metrics, ledger = Metrics(), Ledger()
    completer = Completer(LoopSettings(1.0), pool, ledger, metrics, owner, 0.05, 0.2)
    try:
        for job_id, attempt, kind, payload, timeout_s, _ in rows:
            claim = Claim(job_id, attempt, kind, payload, timeout_s, owner)
            ledger.add(claim)
            completer.submit(claim, Outcome(job_id, attempt, AttemptOutcome.SUCCESS))
        assert len(ledger.pending) == 3
        await asyncio.gather(completer.run_once(), completer.run_once())
        assert ledger.unwritten == 0, "an outcome was neither written nor put back"
        assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == 3
    finally:
        await pool.close()
    assert metrics.succeeded == 3
    assert metrics.fenced_writes == 0, "a second flush rewrote (and was fenced on) the same batch"
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 3
    assert len(ledger) == 0


async def test_permits_come_back_only_once_the_outcome_is_written(db_url, conn) -> None:
    """A job's permit travels with its outcome: until the completion is written the job is
    still `processing` in the database, so its permit must still count."""
    settings = fast_settings()
    await add_jobs(conn, 2)
    owner = "completer-test"
    permits = Permits(2)
    pool = await open_pool(db_url, settings, "worker", max_size=2)
    completer = Completer(LoopSettings(1.0), pool, Ledger(), Metrics(), owner, 0.05, 0.2)
    try:
        async with permits.acquire_up_to(2) as grant:
            rows = await queue.claim(conn, owner, grant.count, 30.0)
            for job_id, attempt, kind, payload, timeout_s, _ in rows:
                completer.submit(Claim(job_id, attempt, kind, payload, timeout_s, owner),
                                 Outcome(job_id, attempt, AttemptOutcome.SUCCESS), grant.take())
        assert permits.in_use == 2, "permits returned before the completions were written"
        assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 2
        assert await completer.run_once() == 2
        assert permits.in_use == 0
        assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == 2
    finally:
        await pool.close()


async def test_abandoned_outcomes_return_their_permits() -> None:
    permits = Permits(1)
    completer = Completer(LoopSettings(1.0), None, Ledger(), Metrics(), "o", 0.05, 0.2)  # type: ignore[arg-type]
    async with permits.acquire_up_to(1) as grant:
        completer.submit(Claim(1, 1, "noop", {}, None, "o"),
                         Outcome(1, 1, AttemptOutcome.SUCCESS), grant.take())
    assert permits.in_use == 1
    assert completer.abandon() == 1
    assert permits.in_use == 0 and completer.ledger.pending == []
