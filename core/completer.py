"""Writes about claimed jobs: batched completions and batched heartbeats.

Both run through one `Ledger` whose write lock orders them, so a heartbeat never runs
while a completion is in flight and cannot mistake a job we just finished for a lost one.

The Completer batches naturally: a job task submits its outcome and awaits the flush
that carries it; the flush takes everything submitted so far. At low load a batch is one
job and adds no delay; under load batches grow and the per-job cost falls.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from core import queue
from core.claim import Claim
from core.faults import crash_point
from core.loops import BackgroundLoop, LoopSettings
from core.metrics import Metrics
from core.queue import Outcome
from core.states import AttemptOutcome

log = logging.getLogger("boundq.worker")

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]


class Ledger:
    """The claims this process holds, by (id, attempt), and the lock ordering writes."""

    def __init__(self) -> None:
        self.claims: dict[tuple[int, int], Claim] = {}
        self.write_lock = asyncio.Lock()

    def add(self, claim: Claim) -> None:
        self.claims[claim.key] = claim

    def discard(self, claim: Claim) -> None:
        self.claims.pop(claim.key, None)

    def __len__(self) -> int:
        return len(self.claims)


class Completer(BackgroundLoop):
    name = "completer"

    def __init__(self, settings: LoopSettings, pool: Pool, ledger: Ledger, metrics: Metrics,
                 owner: str, retry_base_s: float, retry_max_s: float, batch_max: int = 1000
                 ) -> None:
        super().__init__(settings, metrics)
        self.metrics: Metrics = metrics
        self.pool = pool
        self.ledger = ledger
        self.owner = owner
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.batch_max = batch_max
        self.pending: list[tuple[Claim, Outcome, asyncio.Future[set[tuple[int, int]]]]] = []

    def submit(self, claim: Claim, outcome: Outcome) -> asyncio.Future[set[tuple[int, int]]]:
        """Hand over a finished attempt (consumes the claim); the future resolves to the
        keys of its flush batch that committed once that flush is written."""
        claim.finish()
        future: asyncio.Future[set[tuple[int, int]]] = asyncio.get_running_loop().create_future()
        self.pending.append((claim, outcome, future))
        self.wake.set()
        return future

    async def finish(self, claim: Claim, outcome: Outcome) -> bool:
        """Submit and wait for the write; False when the write was fenced (lease lost)."""
        # No shield: a cancelled waiter cancels only its own future; the outcome stays
        # pending and is written with its batch all the same.
        committed = await self.submit(claim, outcome)
        return claim.key in committed

    def full(self, handled: int) -> bool:
        return bool(self.pending)

    async def run_once(self) -> int:
        if not self.pending:
            return 0
        # The batch is taken under the lock: at shutdown stop() flushes while this loop may
        # still be running, and a batch taken before waiting for the lock would be written
        # twice (the second write fenced, and wrongly reported as a lost lease).
        async with self.ledger.write_lock:
            batch = self.pending[: self.batch_max]
            if not batch:
                return 0
            successes = [(c, o, f) for c, o, f in batch if o.outcome is AttemptOutcome.SUCCESS]
            failures = [(c, o, f) for c, o, f in batch if o.outcome is not AttemptOutcome.SUCCESS]
            async with self.pool.connection() as conn:
                if successes:
                    done = await queue.complete_batch(conn, self.owner,
                                                      [c.key for c, _, _ in successes])
                    crash_point("after_commit", bool(done))
                    self._settle(successes, done)
                    self.metrics.succeeded += len(done)
                if failures:
                    statuses = await queue.fail_batch(
                        conn, self.owner, [o for _, o, _ in failures], self.retry_base_s,
                        self.retry_max_s,
                    )
                    self._settle(failures, set(statuses))
                    self.metrics.failed += len(statuses)
                    retried = sum(1 for s in statuses.values() if s == "new")
                    self.metrics.retried += retried
                    self.metrics.dead_lettered += len(statuses) - retried
        return len(batch)

    def _settle(self, items: list[tuple[Claim, Outcome, asyncio.Future[set[tuple[int, int]]]]],
                committed_ids: set[int]) -> None:
        """Drop a written sub-batch from pending and the ledger; resolve its waiters."""
        keys = {c.key for c, _, _ in items if c.id in committed_ids}
        written = {id(f) for _, _, f in items}
        self.pending = [p for p in self.pending if id(p[2]) not in written]
        for claim, outcome, future in items:
            self.ledger.discard(claim)
            if claim.key not in keys:
                self.metrics.fenced_writes += 1
                log.warning("write fenced: job %d attempt %d is no longer ours", claim.id,
                            claim.attempt, extra={"job_id": claim.id, "attempt": claim.attempt,
                                                  "outcome": outcome.outcome.value})
            if not future.done():
                future.set_result(keys)


class Heartbeater(BackgroundLoop):
    """Extends every held lease in one statement; cancels the tasks of lost ones."""

    name = "heartbeat"

    def __init__(self, settings: LoopSettings, pool: Pool, ledger: Ledger, metrics: Metrics,
                 owner: str, lease_s: float) -> None:
        super().__init__(settings, metrics)
        self.metrics: Metrics = metrics
        self.pool = pool
        self.ledger = ledger
        self.owner = owner
        self.lease_s = lease_s

    async def run_once(self) -> int:
        async with self.ledger.write_lock:
            held = [c for c in self.ledger.claims.values() if not c.lost]
            if not held:
                return 0
            async with self.pool.connection() as conn:
                alive = await queue.heartbeat(conn, self.owner, [c.key for c in held], self.lease_s)
            for claim in held:
                if claim.id not in alive:
                    self._lose(claim)
        return len(held)

    def _lose(self, claim: Claim) -> None:
        claim.lost = True
        self.metrics.lost_leases += 1
        log.warning("lease lost: job %d attempt %d (reaped, cancelled or re-claimed)", claim.id,
                    claim.attempt, extra={"job_id": claim.id, "attempt": claim.attempt})
        if not claim.finished and claim.task is not None:
            claim.task.cancel()  # self-fence: stop work whose result would be dropped
