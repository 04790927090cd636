"""The bounded worker of one process.

NUM_WORKERS acquirer loops share one pool of MAX_CONCURRENT_JOBS permits. An acquirer
takes free permits first, then claims at most that many jobs in one statement, so no
claimed job waits for a permit while its lease runs. Each job runs in its own task: one
failing or hanging handler hurts no other, and nothing it raises stops a loop. Around
them: the completer (batched, fenced writes), the heartbeater (one statement for all
held leases), the reaper and the LISTEN listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from boundq.core import queue
from boundq.core.claim import Claim
from boundq.core.completer import Completer, Heartbeater, Ledger
from boundq.core.config import Settings
from boundq.core.db import open_pool
from boundq.core.faults import crash_point
from boundq.core.handlers import JobContext, PermanentJobError, Registry, default_registry
from boundq.core.loops import DB_ERRORS, BackgroundLoop, LoopSettings
from boundq.core.maintenance import Listener, Reaper
from boundq.core.metrics import Metrics
from boundq.core.permits import Permit, Permits, PermitsClosed
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome

log = logging.getLogger("boundq.worker")

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]

# Completion writers per process. One writer was the drain's bottleneck at high
# MAX_CONCURRENT_JOBS (busy 85% of the run, with a quarter of the machine idle); a
# second lets one batch be written while the next is taken. More gained nothing
# measurable on two cores.
COMPLETERS = 2


def new_owner_id() -> str:
    """Unique per process incarnation: a restarted process never reuses an old id
    (procrastinate #1518)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Acquirer(BackgroundLoop):
    name = "acquirer"

    def __init__(self, worker: Worker, settings: LoopSettings) -> None:
        super().__init__(settings, worker.metrics)
        self.worker = worker
        self._asked = 0

    async def run_once(self) -> int:
        w = self.worker
        try:
            async with w.permits.acquire_up_to(w.settings.claim_batch) as grant:
                self._asked = grant.count
                async with w.pool.connection() as conn:
                    rows = await queue.claim(conn, w.owner, grant.count, w.settings.lease_seconds)
                    crash_point("after_claim", bool(rows))
                observe_wait = w.metrics.queue_wait.observe
                for job_id, attempt, kind, payload, timeout_s, waited_s in rows:
                    w.spawn(Claim(job_id, attempt, kind, payload, timeout_s, w.owner, waited_s),
                            grant.take())
                    observe_wait(waited_s if waited_s > 0 else 0.0)
        except PermitsClosed:
            return 0
        w.metrics.claimed += len(rows)
        return len(rows)

    def full(self, handled: int) -> bool:
        # A full claim means more may be waiting: go again without sleeping.
        return handled > 0 and handled >= self._asked


class Worker:
    def __init__(self, settings: Settings, url: str, registry: Registry | None = None,
                 metrics: Metrics | None = None, pool: Pool | None = None,
                 owner: str | None = None) -> None:
        self.settings = settings
        self.url = url
        self.registry = registry or default_registry
        self.metrics = metrics or Metrics()
        self.owner = owner or new_owner_id()
        self.permits = Permits(settings.max_concurrent_jobs)
        self.ledger = Ledger()
        self._own_pool = pool is None
        self._pool = pool
        self._stop = asyncio.Event()  # every loop but the acquirers: set last
        self._stop_claiming = asyncio.Event()  # the acquirers: set first
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._acquirer_tasks: list[asyncio.Task[None]] = []
        self._job_tasks: set[asyncio.Task[None]] = set()
        self._unfinished: list[Claim] = []
        self.acquirers: list[Acquirer] = []
        self.metrics.gauges["permits_in_use"] = lambda: float(self.permits.in_use)
        self.metrics.gauges["permits_high_water"] = lambda: float(self.permits.high_water)

    @property
    def pool(self) -> Pool:
        assert self._pool is not None, "worker not started"
        return self._pool

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        if self._pool is None:
            self._pool = await open_pool(self.url, s, "worker", wait=False)
        self.completers = [
            Completer(LoopSettings(1.0), self.pool, self.ledger, self.metrics, self.owner,
                      s.retry_base_seconds, s.retry_max_seconds)
            for _ in range(COMPLETERS)
        ]
        self.completer = self.completers[0]  # any of them takes submissions for all
        self.heartbeater = Heartbeater(LoopSettings(s.heartbeat_seconds), self.pool, self.ledger,
                                       self.metrics, self.owner, s.lease_seconds)
        self.reaper = Reaper(LoopSettings(s.reap_interval_seconds, jitter=0.3), self.pool,
                             self.metrics)
        self.listener = Listener(LoopSettings(1.0), self.url, self.wake_acquirers)
        self.acquirers = [Acquirer(self, LoopSettings(s.poll_interval_seconds, jitter=0.2))
                          for _ in range(s.num_workers)]
        # The completer and heartbeater outlive the acquirers at shutdown: running jobs
        # still need their leases extended and their outcomes written.
        loops: list[BackgroundLoop] = [*self.completers, self.heartbeater, self.reaper,
                                       self.listener]
        self._acquirer_tasks = [
            asyncio.create_task(a.run(self._stop_claiming), name="boundq-acquirer")
            for a in self.acquirers
        ]
        self._loop_tasks = [asyncio.create_task(lp.run(self._stop), name=f"boundq-{lp.name}")
                            for lp in loops] + self._acquirer_tasks
        self.metrics.gauges["pool_size"] = lambda: float(self.pool.get_stats().get("pool_size", 0))
        self.metrics.gauges["pool_available"] = lambda: float(
            self.pool.get_stats().get("pool_available", 0))
        log.info("worker started", extra={"owner": self.owner, "acquirers": s.num_workers,
                                          "permits": s.max_concurrent_jobs})

    def wake_acquirers(self) -> None:
        for acquirer in self.acquirers:
            acquirer.wake.set()

    def spawn(self, claim: Claim, permit: Permit) -> None:
        task = asyncio.create_task(self._run_job(claim, permit))
        claim.task = task
        self.ledger.add(claim)
        self._job_tasks.add(task)
        self.metrics.in_flight = len(self._job_tasks)
        self.metrics.in_flight_high_water = max(self.metrics.in_flight_high_water,
                                                self.metrics.in_flight)

        def done(finished: asyncio.Task[None]) -> None:
            if not claim.finished:
                # No outcome went to the completer with the permit (cancelled, possibly
                # before it ever ran; lease lost; a crash): return it here.
                permit.release()
            self._job_tasks.discard(finished)
            self.metrics.in_flight = len(self._job_tasks)
            if claim.lost:
                self.ledger.discard(claim)
            elif not claim.finished:
                # Cancelled (shutdown) before its outcome was reported, possibly before it
                # ever ran: the lease stays held and heartbeated until stop() releases it.
                self._unfinished.append(claim)

        task.add_done_callback(done)

    async def _run_job(self, claim: Claim, permit: Permit) -> None:
        outcome = await self._execute(claim)  # cancellation: see spawn()'s done callback
        if outcome is None:  # lease lost while running: the result is dropped
            self.ledger.discard(claim)
            return
        crash_point("after_effect", outcome.outcome is AttemptOutcome.SUCCESS)
        # The permit goes with the outcome: the completer returns it once the outcome is
        # written, so the permits still bound the rows this process holds `processing`.
        self.completer.submit(claim, outcome, permit)

    async def _execute(self, claim: Claim) -> Outcome | None:
        handler = self.registry.get(claim.kind)
        if handler is None:
            return Outcome(claim.id, claim.attempt, AttemptOutcome.ERROR,
                           f"no handler registered for kind {claim.kind!r}", retryable=False)
        context = JobContext(claim.id, claim.attempt, claim.kind, claim.payload, claim.owner)
        started = time.perf_counter()
        try:
            if claim.timeout_s is None:
                await handler.run(context)
            else:
                async with asyncio.timeout(claim.timeout_s):
                    await handler.run(context)
        except TimeoutError as exc:
            timed_out = claim.timeout_s is not None and time.perf_counter() - started >= claim.timeout_s
            return Outcome(claim.id, claim.attempt,
                           AttemptOutcome.TIMEOUT if timed_out else AttemptOutcome.ERROR,
                           f"timed out after {claim.timeout_s}s" if timed_out else repr(exc))
        except PermanentJobError as exc:
            return Outcome(claim.id, claim.attempt, AttemptOutcome.ERROR, repr(exc), retryable=False)
        except asyncio.CancelledError as exc:
            if claim.lost:
                return None
            current = asyncio.current_task()
            if current is not None and current.cancelling() == 0:
                # Raised inside the handler (say, a sub-task it awaited was cancelled), not a
                # cancel of this job's task: a failure like any other, or the job would stay
                # `processing`, its lease heartbeated, with nothing running it.
                return Outcome(claim.id, claim.attempt, AttemptOutcome.ERROR, repr(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - a handler's failure is the job's: recorded, never fatal
            return Outcome(claim.id, claim.attempt, AttemptOutcome.ERROR, repr(exc))
        finally:
            self.metrics.run_time.observe(time.perf_counter() - started)
        if claim.lost:
            return None
        return Outcome(claim.id, claim.attempt, AttemptOutcome.SUCCESS)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming, let running jobs finish for `grace_s`, then cancel the rest and
        hand their leases back so another worker can run them at once."""
        grace = self.settings.shutdown_grace_seconds if grace_s is None else grace_s
        log.info("worker stopping", extra={"owner": self.owner, "in_flight": len(self._job_tasks),
                                           "grace_s": grace})
        self.permits.close()
        for acquirer in self.acquirers:
            acquirer.wake.set()
        self._stop_claiming.set()
        # An acquirer finishes its claim in flight; one stuck on a dead connection is
        # cancelled (a claim that committed unseen comes back through the reaper).
        _, stuck = await asyncio.wait(self._acquirer_tasks, timeout=5) if self._acquirer_tasks else (
            set(), set())
        for task in stuck:
            task.cancel()
        await asyncio.gather(*self._acquirer_tasks, return_exceptions=True)
        if self._job_tasks:
            await asyncio.wait(set(self._job_tasks), timeout=grace)
        late = list(self._job_tasks)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5)
        await self._drain_writes(deadline_s=10)
        await self._release_unfinished()
        self._stop.set()
        for task in self._loop_tasks:
            task.cancel()
        await asyncio.gather(*self._loop_tasks, return_exceptions=True)
        if self._own_pool and self._pool is not None:
            await self._pool.close()
        log.info("worker stopped", extra={"owner": self.owner, **self.metrics.snapshot()})

    async def _drain_writes(self, deadline_s: float) -> None:
        """Write pending completions; if the database stays away, leases expire instead."""
        deadline = time.monotonic() + deadline_s
        while self.ledger.unwritten and time.monotonic() < deadline:
            if not self.ledger.pending:  # a completer's write is under way: let it finish
                await asyncio.sleep(0.01)
                continue
            try:
                await self.completer.run_once()
            except DB_ERRORS as exc:  # the reaper will recover them
                log.warning("could not write completions at shutdown: %s", exc)
                await asyncio.sleep(0.2)
        abandoned = self.completer.abandon()
        if abandoned:
            log.warning("gave up writing %d completions at shutdown; their leases expire and "
                        "the reaper hands the jobs out again", abandoned)

    async def _release_unfinished(self) -> None:
        claims = [c for c in self._unfinished if not c.finished and not c.lost]
        self._unfinished.clear()
        if not claims:
            return
        try:
            async with self.ledger.write_lock, self.pool.connection(timeout=5) as conn:
                released = await queue.release_batch(conn, self.owner, [c.key for c in claims])
            self.metrics.released += len(released)
            log.info("released %d unfinished jobs", len(released))
        except DB_ERRORS as exc:  # leases expire; the reaper recovers
            log.warning("could not release %d leases at shutdown: %s", len(claims), exc)
        for claim in claims:
            self.ledger.discard(claim)

    async def run_until_signalled(self) -> None:
        """Start, run until SIGTERM/SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            await self.stop()
