"""The bounded worker of one process.

NUM_WORKERS claim loops (core/cycler.py) share one pool of MAX_CONCURRENT_JOBS permits.
Each cycle writes the outcomes of finished jobs and claims their successors in one
statement, so no claimed job waits for a permit while its lease runs and a permit passes
from one job to the next without a round trip. Each job runs in its own task: one failing
or hanging handler hurts no other, and nothing it raises stops a loop. Around them: the
heartbeater (one statement for all held leases), the maintenance loops (reaper, stager,
scout, tally folder, retention, cron scheduler) and the LISTEN listener. Every loop has a
connection of its own (core/lanes.py), so none waits for another's statement, and all of
them reconnect by themselves after an outage.
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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from boundq.core import queue, tracing
from boundq.core.claim import Claim
from boundq.core.config import Settings
from boundq.core.cycler import ClaimGate, CycleConfig, Cycler
from boundq.core.faults import crash_point
from boundq.core.floors import ClaimFloors, FloorSettings
from boundq.core.handlers import JobContext, PermanentJobError, Registry, default_registry
from boundq.core.heartbeat import Heartbeater, heartbeat_deadline, heartbeat_loop_settings
from boundq.core.housekeeping import (
    EventLogTrimmer,
    RetentionPolicy,
    RetentionSweeper,
    Scout,
    TallyFolder,
)
from boundq.core.lanes import HandlerConnections, Lane, plan_lanes
from boundq.core.ledger import Ledger
from boundq.core.loops import DB_ERRORS, BackgroundLoop, LoopSettings
from boundq.core.maintenance import Listener, Reaper, Stager
from boundq.core.metrics import Exporter, Metrics
from boundq.core.permits import Permit, Permits
from boundq.core.planner import QueuePlanner
from boundq.core.queue import ClaimedRow, Outcome
from boundq.core.scheduler import Scheduler
from boundq.core.states import AttemptOutcome
from boundq.core.validation import JobSpec, validate_job

log = logging.getLogger("boundq.worker")

MAX_RESULT_BYTES = 1024 * 1024
# Most bytes an attempt's follow-up jobs (JobContext.enqueue) may encode to, all together.
MAX_FOLLOWUP_BYTES = 4 * 1024 * 1024
# A claim loop retries a failed statement within a second: processing resumes within
# about that long once PostgreSQL accepts connections again, whatever the outage's length.
CYCLE_BACKOFF_MAX_S = 1.0
WRITE_DRAIN_S = 10.0  # at shutdown, how long outcomes may take to be written

_result_encoder = msgspec.json.Encoder()


def new_owner_id() -> str:
    """Unique per process incarnation: a restarted process never reuses an old id
    (procrastinate #1518)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class JobHooks:
    """Callbacks for application metrics, called in the job's task; an exception in a hook
    is logged and ignored. `failed` gets the error text and whether it will be retried
    (False: dead-lettered or permanent; the retry decision itself is the database's)."""

    started: Callable[[JobContext], None] | None = None
    succeeded: Callable[[JobContext, Any], None] | None = None
    failed: Callable[[JobContext, str], None] | None = None


class Worker:
    def __init__(self, settings: Settings, url: str, registry: Registry | None = None,
                 metrics: Metrics | None = None, owner: str | None = None,
                 hooks: JobHooks | None = None) -> None:
        self.settings = settings
        self.url = url
        self.registry = registry or default_registry
        self.metrics = metrics or Metrics()
        self.owner = owner or new_owner_id()
        self.hooks = hooks or JobHooks()
        self.permits = Permits(settings.max_concurrent_jobs, on_free=self._wake_one_cycler)
        self.ledger = Ledger(on_put=self._wake_one_cycler)
        self.planner = QueuePlanner(settings.queues)
        self.floors = ClaimFloors(FloorSettings(settings.claim_floor_pin_seconds,
                                                settings.claim_floor_margin_seconds,
                                                settings.claim_floor_rescan_seconds))
        self.gate = ClaimGate()
        self.lanes: list[Lane] = []
        self.cyclers: list[Cycler] = []
        self._loops: list[BackgroundLoop] = []
        self._stop = asyncio.Event()
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._job_tasks: set[asyncio.Task[None]] = set()
        self._unfinished: list[Claim] = []
        # tracing (core/tracing): a run span around each job when tracing is on, decided
        # once here, so a job pays nothing for it when tracing is off
        self._run_one = tracing.wrap_run(self._execute)
        self.metrics.gauges["permits_in_use"] = lambda: float(self.permits.in_use)
        self.metrics.gauges["permits_high_water"] = lambda: float(self.permits.high_water)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        plan = plan_lanes(s.db_connections, s.num_workers)
        config = CycleConfig(self.owner, s.lease_seconds, s.claim_batch, s.retry_base_seconds,
                             s.retry_max_seconds, deadline_s=max(5.0, s.lease_seconds))
        cycle = LoopSettings(s.poll_interval_seconds, jitter=0.2,
                             backoff_max_s=CYCLE_BACKOFF_MAX_S)
        self.handler_connections = HandlerConnections(
            self.url, s, s.db_connections - plan.connections)
        self.cyclers = []
        for _ in range(plan.cyclers):
            lane = self._lane("worker")
            self.cyclers.append(Cycler(cycle, config, lane, self.ledger, self.permits,
                                       self.planner, self.gate, self.spawn, self.metrics,
                                       self.floors))
        beat = self._lane("heartbeat")
        upkeep = beat if plan.maintenance_shares_heartbeat else self._lane("maintenance")
        self.heartbeater = Heartbeater(heartbeat_loop_settings(s.heartbeat_seconds), beat,
                                       self.ledger, self.metrics, self.owner, s.lease_seconds,
                                       heartbeat_deadline(s.heartbeat_seconds, s.lease_seconds))
        quick = dict(backoff_max_s=CYCLE_BACKOFF_MAX_S)
        self.reaper = Reaper(LoopSettings(s.reap_interval_seconds, jitter=0.3, **quick), upkeep,
                             self.metrics, floors=self.floors,
                             held_interval_s=s.lease_seconds / 4)
        self.stager = Stager(LoopSettings(s.poll_interval_seconds, **quick), upkeep)
        self.scout = Scout(LoopSettings(s.poll_interval_seconds, jitter=0.2, **quick), upkeep,
                           self.planner, self.wake_cyclers, self.floors)
        self.listener = Listener(LoopSettings(1.0, **quick), self.url, self.on_notify)
        self.exporter = Exporter(self.metrics)
        housekeeping: list[BackgroundLoop] = [TallyFolder(LoopSettings(10.0, jitter=0.3), upkeep),
                                              MetricsFlusher(LoopSettings(1.0), self.exporter),
                                              Scheduler(upkeep),
                                              EventLogTrimmer(LoopSettings(5.0, jitter=0.3),
                                                              upkeep, s.events_retention_seconds)]
        retention = RetentionPolicy(s.retention_seconds, s.failed_retention_seconds)
        if retention.active:
            self.retention = RetentionSweeper(LoopSettings(5.0, jitter=0.3), upkeep, retention)
            housekeeping.append(self.retention)
        # The first claims split across every queue with work, not only the default one:
        # a worker that a crashing job kills within a second of starting would otherwise
        # never claim from any other queue. An unreachable database only skips this.
        with contextlib.suppress(*DB_ERRORS, TimeoutError):
            async with asyncio.timeout(max(1.0, s.poll_interval_seconds)):
                await self.scout.run_once()
        self._loops = [*self.cyclers, self.heartbeater, self.reaper, self.stager, self.scout,
                       self.listener, *housekeeping]
        self._loop_tasks = [asyncio.create_task(lp.run(self._stop), name=f"boundq-{lp.name}")
                            for lp in self._loops]
        log.info("worker started", extra={"owner": self.owner, "claim_loops": plan.cyclers,
                                          "permits": s.max_concurrent_jobs,
                                          "connections": plan.connections})

    def _lane(self, role: str) -> Lane:
        lane = Lane(self.url, role)
        self.lanes.append(lane)
        return lane

    def _wake_one_cycler(self) -> None:
        """An outcome or a free permit: one idle claim loop is enough to take it."""
        for cycler in self.cyclers:
            if cycler.idle and not cycler.wake.is_set():
                cycler.wake.set()
                return

    def wake_cyclers(self) -> None:
        for cycler in self.cyclers:
            cycler.wake.set()

    def on_notify(self) -> None:
        self.planner.wake()
        self.wake_cyclers()

    # --- jobs ----------------------------------------------------------------------------
    def spawn(self, row: ClaimedRow, permit: Permit) -> None:
        claim = Claim(row.id, row.attempt, row.kind, row.payload, row.timeout_s, self.owner,
                      row.waited_s, row.queue, row.run_at, row.created_at, row.claimed_at)
        task = asyncio.create_task(self._run_job(claim, permit))
        claim.task = task
        self.ledger.add(claim)
        self._job_tasks.add(task)
        self.metrics.in_flight = len(self._job_tasks)
        if self.metrics.in_flight > self.metrics.in_flight_high_water:
            self.metrics.in_flight_high_water = self.metrics.in_flight

        def done(finished: asyncio.Task[None]) -> None:
            if not claim.finished:
                # No outcome went out with the permit (cancelled, possibly before it ever
                # ran; lease lost; a crash): return it here.
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
        outcome = await self._run_one(claim)  # cancellation: see spawn()'s done callback
        if outcome is None:  # lease lost while running: the result is dropped
            self.ledger.discard(claim)
            return
        crash_point("after_effect", outcome.outcome is AttemptOutcome.SUCCESS)
        # The permit goes with the outcome: the claim loop that writes it passes it on to
        # the next job (or back to the pool) only once the outcome is written, so the
        # permits still bound the rows this process holds `processing`.
        self.ledger.put((claim, outcome, permit))

    def _context(self, claim: Claim) -> JobContext:
        return JobContext(claim.id, claim.attempt, claim.kind, claim.payload, claim.owner,
                          claim.queue, claim.created_at, claim.run_at, claim.claimed_at,
                          claim.timeout_s, self.handler_connections.connection,
                          self._follow_up)

    def _follow_up(self, item: Mapping[str, Any]) -> JobSpec:
        """A handler's follow-up job (JobContext.enqueue), checked as POST /jobs checks."""
        return validate_job(item, self.registry, self.settings, allow_status=False)

    async def _execute(self, claim: Claim) -> Outcome | None:
        handler = self.registry.get(claim.kind)
        if handler is None:
            return Outcome(claim.id, claim.attempt, AttemptOutcome.ERROR,
                           f"no handler registered for kind {claim.kind!r}", retryable=False)
        context = self._context(claim)
        self._hook(self.hooks.started, context)
        started = time.perf_counter()
        try:
            if claim.timeout_s is None:
                result = await handler.run(context)
            else:
                async with asyncio.timeout(claim.timeout_s):
                    result = await handler.run(context)
            encoded = None if result is None else encode_result(result)
            chained = encode_followups(context.followups) if context.followups else None
        except TimeoutError as exc:
            timed_out = claim.timeout_s is not None and time.perf_counter() - started >= claim.timeout_s
            return self._failed(context, Outcome(
                claim.id, claim.attempt, AttemptOutcome.TIMEOUT if timed_out else AttemptOutcome.ERROR,
                f"timed out after {claim.timeout_s}s" if timed_out else repr(exc)))
        except PermanentJobError as exc:
            return self._failed(context, Outcome(claim.id, claim.attempt, AttemptOutcome.ERROR,
                                                 repr(exc), retryable=False))
        except asyncio.CancelledError as exc:
            if claim.lost:
                return None
            current = asyncio.current_task()
            if current is not None and current.cancelling() == 0:
                # Raised inside the handler (say, a sub-task it awaited was cancelled), not a
                # cancel of this job's task: a failure like any other, or the job would stay
                # `processing`, its lease heartbeated, with nothing running it.
                return self._failed(context, Outcome(claim.id, claim.attempt,
                                                     AttemptOutcome.ERROR, repr(exc)))
            raise
        except Exception as exc:  # noqa: BLE001 - a handler's failure is the job's: recorded, never fatal
            return self._failed(context, Outcome(claim.id, claim.attempt, AttemptOutcome.ERROR,
                                                 repr(exc)))
        finally:
            self.metrics.run_time.observe(time.perf_counter() - started)
        if claim.lost:
            return None
        self._hook(self.hooks.succeeded, context, result)
        return Outcome(claim.id, claim.attempt, AttemptOutcome.SUCCESS, result_json=encoded,
                       followups_json=chained)

    def _failed(self, context: JobContext, outcome: Outcome) -> Outcome:
        self._hook(self.hooks.failed, context, outcome.error or "")
        return outcome

    @staticmethod
    def _hook(hook: Callable[..., None] | None, *args: Any) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            log.exception("job hook %r raised", hook)

    # --- shutdown ------------------------------------------------------------------------
    async def stop(self, grace_s: float | None = None) -> None:
        """Stop claiming, let running jobs finish for `grace_s`, then cancel the rest and
        hand their leases back so another worker can run them at once."""
        grace = self.settings.shutdown_grace_seconds if grace_s is None else grace_s
        log.info("worker stopping", extra={"owner": self.owner, "in_flight": len(self._job_tasks),
                                           "grace_s": grace})
        self.permits.close()
        for cycler in self.cyclers:
            cycler.claiming = False
        # A claim already in flight may still bring jobs in: wait for it, so every job of
        # this process is known below (a claim stuck on a dead connection ends by its
        # statement deadline).
        await self.gate.quiet()
        if self._job_tasks:
            await asyncio.wait(set(self._job_tasks), timeout=grace)
        late = list(self._job_tasks)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=5)
        await self._drain_writes(WRITE_DRAIN_S)
        await self._release_unfinished()
        self._stop.set()
        for task in self._loop_tasks:
            task.cancel()
        await asyncio.gather(*self._loop_tasks, return_exceptions=True)
        for lane in self.lanes:
            await lane.close()
        await self.handler_connections.close()
        self.exporter.flush()
        log.info("worker stopped", extra={"owner": self.owner, **self.metrics.snapshot()})

    async def _drain_writes(self, deadline_s: float) -> None:
        """Let the claim loops write what is pending; if the database stays away, the
        leases expire instead and the reaper hands the jobs out again."""
        self.wake_cyclers()
        if not await self.ledger.wait_written(deadline_s):
            log.warning("gave up writing %d outcomes at shutdown; their leases expire and the "
                        "reaper hands the jobs out again", self.ledger.unwritten)

    async def _release_unfinished(self) -> None:
        claims = [c for c in self._unfinished if not c.finished and not c.lost]
        self._unfinished.clear()
        if not claims:
            return
        try:
            async with self.ledger.write_lock, self.heartbeater.lane.connection(5) as conn:
                released = await queue.release_batch(conn, self.owner, [c.key for c in claims])
            self.metrics.released += len(released)
            log.info("released %d unfinished jobs", len(released))
        except DB_ERRORS as exc:  # leases expire; the reaper recovers
            log.warning("could not release %d leases at shutdown: %s", len(claims), exc)
        for claim in claims:
            self.ledger.discard(claim)

    async def run_until_signalled(
            self, before_start: Callable[[], Awaitable[object]] | None = None) -> None:
        """Run until SIGTERM or SIGINT, then stop gracefully. A second signal (a terminal's
        Ctrl-C reaches every process of the group, and a supervising parent forwards its
        own) changes nothing: the drain goes on, and no signal ever interrupts it."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            if before_start is not None:
                preparing = asyncio.ensure_future(before_start())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({preparing, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not preparing.done():  # stopped while still preparing
                    preparing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await preparing
                    return
                preparing.result()
            await self.start()
            await stop.wait()
            await self.stop()
        finally:
            # Until the process exits, further signals are ignored (never the default
            # handler, whose KeyboardInterrupt would cut a drain short).
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)  # restores the default handler: replaced
                signal.signal(sig, signal.SIG_IGN)  # at once, with no await in between


class MetricsFlusher(BackgroundLoop):
    """Moves the worker's counts into prometheus-client once a second (core/metrics.py)."""

    name = "metrics"

    def __init__(self, settings: LoopSettings, exporter: Exporter) -> None:
        super().__init__(settings)
        self.exporter = exporter

    async def run_once(self) -> int:
        self.exporter.flush()
        return 0


def encode_result(result: Any) -> str:
    """A handler's return value as the job's result (JSON); raises ValueError with a
    clear message when it cannot be stored."""
    try:
        data = _result_encoder.encode(result)
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"the handler's result is not JSON: {exc}") from None
    if len(data) > MAX_RESULT_BYTES:
        raise ValueError(f"the handler's result is {len(data)} bytes encoded; at most "
                         f"{MAX_RESULT_BYTES} are stored")
    if b"\\u0000" in data:
        raise ValueError("the handler's result contains a NUL character (\\u0000), which "
                         "PostgreSQL's jsonb cannot store")
    return data.decode()


def encode_followups(specs: list[JobSpec]) -> str:
    """An attempt's follow-up jobs as job_complete_and_claim takes them; raises ValueError
    with a clear message when they are too big to carry."""
    data = queue.followups_json(specs)
    if len(data) > MAX_FOLLOWUP_BYTES:
        raise ValueError(f"the handler's {len(specs)} follow-up jobs are {len(data)} bytes "
                         f"encoded; at most {MAX_FOLLOWUP_BYTES} are carried")
    return data
