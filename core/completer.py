"""Writes about claimed jobs: batched completions and batched heartbeats.

The Completers batch naturally: a job task hands its outcome and its permit to the
`Ledger`'s outbox and ends; a completer takes everything submitted so far in one step
(no await between look and take, so two completers never share an outcome), writes it,
and returns the permits of the written batch at once. At low load a batch is one job
and adds no delay; under load batches grow and the per-job cost falls. Nothing per job
waits on the write (no future, no wake-up). A worker runs more than one completer: a
single writer was the drain's bottleneck (busy 85% of the run, measured), and batches
are disjoint, so writes can overlap.

The heartbeat takes no part in that ordering. It marks a lease lost only for a job still
running: a job whose outcome is in the outbox may have completed between the heartbeat's
look at the ledger and its UPDATE, and for those the completion's own result decides
(written, or fenced and reported so). A shutdown release and the heartbeat share the
ledger's write lock, for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from boundq.core import queue
from boundq.core.claim import Claim
from boundq.core.faults import crash_point
from boundq.core.loops import BackgroundLoop, LoopSettings
from boundq.core.metrics import Metrics
from boundq.core.permits import Permit, release_all
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome

log = logging.getLogger("boundq.worker")

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

# One submitted outcome: the claim, its outcome and the job's permit (returned after the
# write).
Pending = tuple[Claim, Outcome, Permit | None]


class Ledger:
    """The claims this process holds, by (id, attempt); the outbox of outcomes not yet
    written; and the lock that orders heartbeats with shutdown releases."""

    def __init__(self) -> None:
        self.claims: dict[tuple[int, int], Claim] = {}
        self.pending: list[Pending] = []
        self.writing = 0  # outcomes taken by a completer and not yet settled or put back
        self.write_lock = asyncio.Lock()
        self._writers: list[asyncio.Event] = []

    def add(self, claim: Claim) -> None:
        self.claims[claim.key] = claim

    def discard(self, claim: Claim) -> None:
        self.claims.pop(claim.key, None)

    def add_writer(self, wake: asyncio.Event) -> None:
        """A completer's wake-up, set whenever an outcome is put in the outbox."""
        self._writers.append(wake)

    def put(self, item: Pending) -> None:
        item[0].finish()  # consumes the claim: reporting an attempt twice raises
        self.pending.append(item)
        for wake in self._writers:
            wake.set()

    def take(self, n: int) -> list[Pending]:
        batch = self.pending[:n]
        del self.pending[:n]
        self.writing += len(batch)
        return batch

    def put_back(self, items: list[Pending]) -> None:
        """A write failed: its outcomes go first in line for the next one."""
        self.writing -= len(items)
        self.pending[0:0] = items

    def settled(self, items: list[Pending]) -> None:
        self.writing -= len(items)

    def drop_pending(self) -> list[Pending]:
        """Everything waiting (not what a write has already taken)."""
        items, self.pending = self.pending, []
        return items

    @property
    def unwritten(self) -> int:
        """Outcomes not yet written: waiting, or in a write still under way."""
        return len(self.pending) + self.writing

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
        ledger.add_writer(self.wake)

    def submit(self, claim: Claim, outcome: Outcome, permit: Permit | None = None) -> None:
        """Hand over a finished attempt (consumes the claim) and the job's permit, which
        is returned once the outcome is written."""
        self.ledger.put((claim, outcome, permit))

    def full(self, handled: int) -> bool:
        return bool(self.ledger.pending)

    async def run_once(self) -> int:
        batch = self.ledger.take(self.batch_max)
        if not batch:
            return 0
        successes = [p for p in batch if p[1].outcome is AttemptOutcome.SUCCESS]
        failures = [p for p in batch if p[1].outcome is not AttemptOutcome.SUCCESS]
        unwritten = batch
        try:
            async with self.pool.connection() as conn:
                if successes:
                    done = await queue.complete_batch(conn, self.owner,
                                                      [p[0].key for p in successes])
                    crash_point("after_commit", bool(done))
                    unwritten = failures
                    self._settle(successes, done)
                    self.metrics.succeeded += len(done)
                if failures:
                    statuses = await queue.fail_batch(
                        conn, self.owner, [p[1] for p in failures], self.retry_base_s,
                        self.retry_max_s,
                    )
                    unwritten = []
                    self._settle(failures, set(statuses))
                    self.metrics.failed += len(statuses)
                    retried = sum(1 for s in statuses.values() if s == "new")
                    self.metrics.retried += retried
                    self.metrics.dead_lettered += len(statuses) - retried
        finally:
            if unwritten:
                # Retried as they are: a write whose answer was lost after it committed is
                # recognised then as this owner's own (see queue.complete_batch).
                self.ledger.put_back(unwritten)
        return len(batch)

    def _settle(self, items: list[Pending], committed_ids: set[int]) -> None:
        """A written sub-batch: drop it from the ledger and return its permits."""
        self.ledger.settled(items)
        claims = self.ledger.claims
        for claim, outcome, _ in items:
            claims.pop(claim.key, None)
            if claim.id not in committed_ids:
                self.metrics.fenced_writes += 1
                log.warning("write fenced: job %d attempt %d is no longer ours", claim.id,
                            claim.attempt, extra={"job_id": claim.id, "attempt": claim.attempt,
                                                  "outcome": outcome.outcome.value})
        release_all(p[2] for p in items if p[2] is not None)

    def abandon(self) -> int:
        """Give up on unwritten outcomes (shutdown with the database away): return their
        permits; their leases expire and the reaper hands the jobs out again."""
        items = self.ledger.drop_pending()
        for claim, _, _ in items:
            self.ledger.discard(claim)
        release_all(p[2] for p in items if p[2] is not None)
        return len(items)


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
                # A finished claim may have completed meanwhile: its write decides.
                if claim.id not in alive and not claim.finished:
                    self._lose(claim)
        return len(held)

    def _lose(self, claim: Claim) -> None:
        claim.lost = True
        self.metrics.lost_leases += 1
        log.warning("lease lost: job %d attempt %d (reaped, cancelled or re-claimed)", claim.id,
                    claim.attempt, extra={"job_id": claim.id, "attempt": claim.attempt})
        if claim.task is not None:
            claim.task.cancel()  # self-fence: stop work whose result would be dropped
