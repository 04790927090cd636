"""The completer writes each reported outcome exactly once, even when two flushes run at
once (at shutdown, stop() flushes while the completer's own loop may still be running)."""

from __future__ import annotations

import asyncio

from core import queue
from core.claim import Claim
from core.completer import Completer, Ledger
from core.db import open_pool
from core.loops import LoopSettings
from core.metrics import Metrics
from core.queue import Outcome
from core.states import AttemptOutcome
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
        futures = []
        for job_id, attempt, kind, payload, timeout_s, _ in rows:
            claim = Claim(job_id, attempt, kind, payload, timeout_s, owner)
            ledger.add(claim)
            futures.append(completer.submit(claim, Outcome(job_id, attempt, AttemptOutcome.SUCCESS)))
        await asyncio.gather(completer.run_once(), completer.run_once())
        assert all(f.done() for f in futures)
    finally:
        await pool.close()
    assert metrics.succeeded == 3
    assert metrics.fenced_writes == 0, "a second flush rewrote (and was fenced on) the same batch"
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 3
    assert len(ledger) == 0
