"""The fault machine: Hypothesis generates a schedule of work and faults against real
worker processes and a real PostgreSQL; the history checker judges what happened.

Each example gets a fresh database cloned from the migrated template, and at least one
worker. After every step the cheap (mid-run) invariants are checked on one snapshot of
the database. Teardown heals every fault, keeps two healthy workers running until all
jobs are terminal (or the profile's recovery bound passes), stops the workers, and runs
the full (final) check. A violation keeps the history as a JSON artifact and fails.

The same machine runs against the deliberately broken variants (test_selftest.py).
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from typing import Any, ClassVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from boundq.core.faultproxy import Mode
from boundq.core.faults import POINTS
from invariants.checker import InvariantViolation
from invariants.harness import Context, Harness, WorkerProc
from invariants.profile import LEASE_S, WORKER_ENV
from invariants.variants import SKEWED_CLOCK_S, Variant

MAX_LIVE_WORKERS = 3
# floors_without_rescan's straggler (QueueMachine._straggler_below_the_floors): backfilled
# again while it is taken within this many seconds (a walk from the head is due every
# CLAIM_FLOOR_RESCAN_SECONDS in a correct worker), this many times at most: every job
# worker the drain may leave running has learned its floors by then.
STRAGGLER_TAKEN_S = 3.0
STRAGGLER_ROUNDS = 5
# unfenced_completion's opening (QueueMachine._stale_owner): its effect jobs outlast a
# claim round, and each of its waits gives up after this long.
STALE_OWNER_JOB_MS = 800
STALE_OWNER_WAIT_S = 30.0
MAX_SCHEDULES = 3

_PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "noop": st.just({}),
    "sleep": st.fixed_dictionaries({"ms": st.integers(0, 600)}),
    "effect": st.fixed_dictionaries(
        {"ms": st.integers(0, 800)},
        optional={"stall_ms": st.integers(0, 2500), "stall_attempts": st.integers(0, 1)}),
    "fail": st.fixed_dictionaries({"times": st.integers(0, 3)}),
    "stall": st.fixed_dictionaries({"ms": st.integers(200, 1800)}),
    "poison": st.fixed_dictionaries({"times": st.integers(1, 3)}),
}
_KINDS = ["noop", "sleep", "sleep", "effect", "effect", "effect", "effect", "fail", "stall",
          "poison"]

# Chaining: an echo job's `then` is a noop, or an echo with a `then` of its own (a chain of
# depth 2). The harness names every follow-up after its root job (Harness.job), so the
# checker can count each one (exactly_once_chain).
_THEN_LEAF = st.fixed_dictionaries({"kind": st.just("noop")}, optional={
    "queue": st.just("mail"), "delay": st.sampled_from([0, 0.3])})
_THEN = _THEN_LEAF | st.fixed_dictionaries({
    "kind": st.just("echo"),
    "payload": st.fixed_dictionaries({"value": st.integers(0, 9), "then": _THEN_LEAF})})
# Chains come from the first step (a few among the backlog) and from enqueue_chains;
# the other rules' mix of kinds is left as it was.
CHAIN = st.fixed_dictionaries({"kind": st.just("echo"), "payload": st.fixed_dictionaries({
    "value": st.integers(0, 99), "ms": st.integers(0, 600), "then": _THEN})})


# Flow control: jobs spread over two queues; limits put on either queue or on two kinds
# while jobs run.
QUEUES = ["default", "mail"]
LIMITED_KINDS = ["sleep", "effect"]


def _job(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"kind": st.just(kind), "payload": _PAYLOADS[kind]},
        optional={"priority": st.integers(0, 9), "delay": st.sampled_from([0, 0.3, 1.0, 2.0]),
                  "dedupe_key": st.sampled_from(["k0", "k1", "k2"]),
                  "max_attempts": st.integers(1, 4), "queue": st.sampled_from(QUEUES)})


LIMITS = st.fixed_dictionaries({}, optional={
    "concurrency": st.none() | st.integers(0, 3),
    "rate_per_s": st.none() | st.sampled_from([1.0, 4.0, 20.0]),
    "burst": st.integers(1, 3),
    "paused": st.sampled_from([False, False, False, True]),
})


JOBS = st.sampled_from(_KINDS).flatmap(_job)
# Dependencies: a parent that succeeds, or fails for good (no attempts left), and a few
# jobs that wait for it; one grandchild waits for the parent and the first child.
PARENTS = st.one_of(  # the simplest example has a parent that fails at once
    st.fixed_dictionaries({"kind": st.just("fail"),
                           "payload": st.fixed_dictionaries({"times": st.integers(1, 3)}),
                           "max_attempts": st.integers(1, 2)}),
    st.fixed_dictionaries({"kind": st.just("sleep"), "payload": _PAYLOADS["sleep"]}))
CHILDREN = st.lists(st.sampled_from([{"kind": "noop"}, {"kind": "effect",
                                                         "payload": {"ms": 20}}]),
                    min_size=1, max_size=3)
FAMILY = st.tuples(PARENTS, CHILDREN, st.booleans())
FEW_JOBS = st.lists(JOBS, max_size=6)
# A worker whose clock runs ten minutes fast. The error is handed to a worker only as the
# clock the worker_clock_leases variant does its lease math with (variants.py); boundq's
# own workers never get it, since by design no lease decision reads a worker's clock (a
# libfaketime-skewed real clock would test that too; it is not used here).
SKEW = st.sampled_from([0.0, 0.0, SKEWED_CLOCK_S])
SETTLE_MS = st.integers(0, 400)
# A cron schedule: ticks every 1 or 2 s (a sixth, seconds field: see Harness.put_schedule),
# catch_up, time zone, and the job each tick makes.
SCHEDULES = st.tuples(st.sampled_from([1, 1, 2]), st.integers(1, 3),
                      st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
                      st.sampled_from([{"kind": "noop"}, {"kind": "effect",
                                                           "payload": {"ms": 50}}]))


class QueueMachine(RuleBasedStateMachine):
    ctx: ClassVar[Context]
    variant: ClassVar[Variant]
    _examples: ClassVar[itertools.count[int]] = itertools.count(1)

    workers = Bundle("workers")

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(self.ctx, self.variant, f"ex{next(self._examples)}")
        self.ctx.stats.examples[self.variant.name] += 1
        # Rule-visible state is only what rules did (never process liveness, which varies
        # from run to run): Hypothesis must draw the same way when it replays an example.
        self.running = 0
        self.failed = False

    def _live(self) -> list[WorkerProc]:
        return [w for w in self.h.workers if w.alive]

    # --- work ------------------------------------------------------------------------------
    @initialize(target=workers, backlog=st.lists(JOBS, min_size=5, max_size=40),
                chains=st.lists(CHAIN, min_size=1, max_size=3),
                first=st.tuples(st.integers(1, 4), SKEW),
                second=st.none() | st.tuples(st.integers(1, 4), SKEW), cron=SCHEDULES,
                family=FAMILY)
    def first_workers(self, backlog: list[dict[str, Any]], chains: list[dict[str, Any]],
                      first: tuple[int, float], second: tuple[int, float] | None,
                      cron: tuple[int, int, str, dict[str, Any]],
                      family: tuple[dict[str, Any], list[dict[str, Any]], bool]
                      ) -> MultipleResults[WorkerProc]:
        # Always work in flight (swarm testing may switch the enqueue rules off), chains
        # and a family of dependent jobs among it, a cron schedule ticking, and one or two
        # workers (concurrency, clock skew; each runs a scheduler) from the first step on.
        if self.variant.straggler_at_drain:
            self.h.hold_snapshot()  # held from the start, so every scout sees it old
        self.h.enqueue([self.h.job(**job) for job in [*chains, *backlog]])
        self._family(family)
        self.h.put_schedule(*cron)
        specs = [first] if second is None else [first, second]
        if self.variant.start_workers:
            specs = list(self.variant.start_workers)
        started = [self.h.start_worker(c, clock_skew_s=skew) for c, skew in specs]
        self.running += len(started)
        if self.variant.stale_owner_at_start and len(started) > 1:
            self._stale_owner(started)
        return multiple(*started)

    def _stale_owner(self, started: list[WorkerProc]) -> None:
        """Slow effect jobs for every permit; once all run, the first worker is cut off
        (black hole) until another worker has claimed one of them again (its lease ran
        out and was reaped), then let through: its late completions and heartbeats reach
        the database, and only their fence stops them. Each wait ends on what the
        database shows, or after STALE_OWNER_WAIT_S (the example then goes on as drawn)."""
        permits = sum(w.concurrency for w in started)
        ids = self.h.enqueue([self.h.job(kind="effect", payload={"ms": STALE_OWNER_JOB_MS})
                              for _ in range(permits)])
        if not self._until(lambda: len(set(ids) & set(self.h.processing_ids())) == permits):
            return
        self.h.partition(started[0], Mode.BLACKHOLE)
        self._until(lambda: bool(self.h.sql("SELECT 1 FROM jobs WHERE id = ANY(%s) AND "
                                            "attempts > 1", (ids,))))
        self.h.heal(started[0], "resume")

    @staticmethod
    def _until(done: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + STALE_OWNER_WAIT_S
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    @rule(job=JOBS)
    def enqueue_one(self, job: dict[str, Any]) -> None:
        self.h.enqueue([self.h.job(**job)])

    @rule(family=FAMILY)
    def enqueue_family(self, family: tuple[dict[str, Any], list[dict[str, Any]], bool]) -> None:
        self._family(family)

    def _family(self, family: tuple[dict[str, Any], list[dict[str, Any]], bool]) -> None:
        """A parent, children that depend on it (`blocked` until it succeeds, cancelled if
        it fails or is cancelled), maybe a grandchild: dependency_order judges them."""
        parent, children, grandchild = family
        ids = self.h.enqueue([self.h.job(**parent)])
        if not ids:  # the create met an outage: nothing to depend on
            return
        kids = self.h.enqueue([self.h.job(**child, depends_on=ids) for child in children])
        if kids and grandchild:
            self.h.enqueue([self.h.job(depends_on=[ids[0], kids[0]])])

    @rule(jobs=st.lists(CHAIN, min_size=1, max_size=6))
    def enqueue_chains(self, jobs: list[dict[str, Any]]) -> None:
        self.h.enqueue([self.h.job(**job) for job in jobs])

    @rule(jobs=st.lists(JOBS, min_size=2, max_size=25))
    def enqueue_bulk(self, jobs: list[dict[str, Any]]) -> None:
        self.h.enqueue([self.h.job(**job) for job in jobs])

    @precondition(lambda self: self.running < MAX_LIVE_WORKERS)
    @rule(target=workers, concurrency=st.integers(1, 4),
          crash_at=st.sampled_from([None, None, None, *POINTS]), clock_skew_s=SKEW)
    def start_worker(self, concurrency: int, crash_at: str | None,
                     clock_skew_s: float) -> WorkerProc:
        self.running += 1
        return self.h.start_worker(concurrency, crash_at, clock_skew_s)

    # Preconditions read only what rules did, never the database or the processes: a
    # replay (shrinking, @reproduce_failure) must draw exactly as the first run did.
    @rule(pick=st.integers(0, 10**6), in_flight=st.booleans())
    def cancel(self, pick: int, in_flight: bool) -> None:
        # In flight: a job some worker is running now, whose late writes must be fenced.
        ids = (in_flight and self.h.processing_ids()) or self.h.acked_ids()
        if ids:  # every create so far may have met an outage: then nothing to cancel
            self.h.cancel(ids[pick % len(ids)])

    # Limits change while jobs run: a lower limit stops new claims, never running jobs.
    @rule(target_=st.sampled_from([("queue", q) for q in QUEUES]
                                  + [("kind", k) for k in LIMITED_KINDS]),
          limits=LIMITS, weight=st.integers(1, 5))
    def set_limits(self, target_: tuple[str, str], limits: dict[str, Any], weight: int) -> None:
        scope, name = target_
        body = {**limits, "weight": weight} if scope == "queue" else limits
        self.h.set_limits(scope, name, body)
    @precondition(lambda self: len(self.h.schedules) < MAX_SCHEDULES)
    @rule(cron=SCHEDULES)
    def put_schedule(self, cron: tuple[int, int, str, dict[str, Any]]) -> None:
        self.h.put_schedule(*cron)

    @rule(ms=st.integers(50, 1500))
    def let_time_pass(self, ms: int) -> None:
        time.sleep(ms / 1000)

    @rule()
    def advance_reaper(self) -> None:
        self.h.advance_reaper()

    # A forgotten BEGIN holds the xmin horizon: claims start at floors (core/floors.py)
    # while it lasts, and a job made runnable below them (a backfill with a run_at long
    # past, a child unblocked after its parent) waits for the next walk from the head,
    # never for ever (no_lost_job at the drain, which runs with the snapshot still held).
    @rule()
    def hold_snapshot(self) -> None:
        self.h.hold_snapshot()

    @rule()
    def release_snapshot(self) -> None:
        self.h.release_snapshot()

    @rule(queue=st.sampled_from(QUEUES))
    def backfill(self, queue: str) -> None:
        self.h.backfill(queue)

    # --- faults ----------------------------------------------------------------------------
    # Each fault first feeds a few jobs and lets workers claim them, so the fault lands on
    # work in flight however the swarm of enabled rules came out for this example.
    def _feed(self, jobs: list[dict[str, Any]], settle_ms: int) -> None:
        if not self._live():  # crash points and poison jobs kill workers: restart one
            self.h.start_worker(2)
        if jobs:
            self.h.enqueue([self.h.job(**job) for job in jobs])
        time.sleep(settle_ms / 1000)

    # A killed or stopped worker is replaced, as core/supervisor.py restarts a dead child.
    @rule(target=workers, w=consumes(workers), jobs=FEW_JOBS, settle_ms=SETTLE_MS)
    def sigkill(self, w: WorkerProc, jobs: list[dict[str, Any]], settle_ms: int) -> WorkerProc:
        self._feed(jobs, settle_ms)
        self.h.signal(w, signal.SIGKILL)
        return self.h.start_worker(w.concurrency)

    @rule(target=workers, w=consumes(workers), offset_ms=st.integers(0, 40))
    def sigkill_at_tick(self, w: WorkerProc, offset_ms: int) -> WorkerProc:
        """SIGKILL a scheduler just after a whole second, when every schedule is due and
        every scheduler is reading or firing it."""
        if not self._live():
            self.h.start_worker(2)
        time.sleep(1 - time.time() % 1 + offset_ms / 1000)
        self.h.signal(w, signal.SIGKILL)
        return self.h.start_worker(w.concurrency)

    @rule(target=workers, w=consumes(workers), jobs=FEW_JOBS, settle_ms=SETTLE_MS)
    def sigterm(self, w: WorkerProc, jobs: list[dict[str, Any]], settle_ms: int) -> WorkerProc:
        self._feed(jobs, settle_ms)
        self.h.signal(w, signal.SIGTERM)
        return self.h.start_worker(w.concurrency)

    @rule(w=workers, factor=st.floats(1.1, 2.5), jobs=FEW_JOBS, settle_ms=SETTLE_MS)
    def zombie(self, w: WorkerProc, factor: float, jobs: list[dict[str, Any]],
               settle_ms: int) -> None:
        self._feed(jobs, settle_ms)
        self.h.zombie(w, LEASE_S * factor + 0.2)

    @rule(down_ms=st.integers(0, 1000), jobs=FEW_JOBS, settle_ms=SETTLE_MS)
    def pg_crash_restart(self, down_ms: int, jobs: list[dict[str, Any]], settle_ms: int) -> None:
        self._feed(jobs, settle_ms)
        self.h.pg_restart(down_ms / 1000)

    @rule(target_=st.sampled_from(["listener", "pool", "all"]), jobs=FEW_JOBS,
          settle_ms=SETTLE_MS)
    def terminate_backends(self, target_: str, jobs: list[dict[str, Any]],
                           settle_ms: int) -> None:
        self._feed(jobs, settle_ms)
        self.h.terminate(target_)

    @rule(w=workers, mode=st.sampled_from([Mode.BLACKHOLE, Mode.BLACKHOLE, Mode.RESET]),
          jobs=FEW_JOBS, settle_ms=SETTLE_MS)
    def partition(self, w: WorkerProc, mode: Mode, jobs: list[dict[str, Any]],
                  settle_ms: int) -> None:
        self._feed(jobs, settle_ms)
        self.h.partition(w, mode)

    @precondition(lambda self: any(w.partitioned for w in self.h.workers))
    @rule(how=st.sampled_from(["resume", "reset"]))
    def heal(self, how: str) -> None:
        for w in self.h.workers:
            if w.partitioned:
                self.h.heal(w, how)

    # --- judging ---------------------------------------------------------------------------
    @invariant()
    def cheap_invariants(self) -> None:
        try:
            self.h.check(final=False)
        except InvariantViolation:
            self.failed = True
            raise

    def teardown(self) -> None:
        try:
            if self.failed:  # already judged and kept; no need to drain
                return
            self.h.heal_all()
            self.h.clear_limits()
            # A broken variant that wedges is caught by the bound: no need to wait long.
            bound = self.ctx.profile.drain_s
            if self.variant.straggler_at_drain:
                self._straggler_below_the_floors(min(bound, 12))
            self.h.drain(min(bound, 12) if self.variant.broken else bound)
            self.h.stop_workers()
            self.h.check(final=True)  # an undrained job fails here as no_lost_job
        finally:
            self.h.close()

    def _straggler_below_the_floors(self, bound_s: float) -> None:
        """With a snapshot held long enough for the workers' scouts to see it, drain (the
        walks that run out floor every priority at the claim's time), then backfill a job
        below those floors: only a walk from the head takes it.

        A worker learns its floors only from claims that take rows while floors are on, so
        one the drain started late (it keeps two healthy) may have none yet: it walks from
        the head, takes the straggler, and learns them from that very claim. So while the
        straggler is taken within STRAGGLER_TAKEN_S, another is backfilled, up to
        STRAGGLER_ROUNDS times: each take teaches one more worker its floors, and a
        straggler left waiting is what the final check judges (no_lost_job). Drawn once,
        a late worker hid the bug in most examples: a CI run needed 12."""
        held = self.h.hold_snapshot()
        if held is None:
            return
        if held:  # a new session: let every scout see it old enough (a few polls)
            time.sleep(3 * float(WORKER_ENV["POLL_INTERVAL_SECONDS"])
                       + float(WORKER_ENV["CLAIM_FLOOR_PIN_SECONDS"]))
        self.h.drain(bound_s)
        for _ in range(STRAGGLER_ROUNDS):
            if not self.h.backfill("default") or not self.h.drain(STRAGGLER_TAKEN_S):
                return


def run_machine(ctx: Context, variant: Variant, *, examples: int, steps: int,
                shrink: bool = True) -> None:
    machine = type(f"QueueMachine_{variant.name}", (QueueMachine,),
                   {"ctx": ctx, "variant": variant})
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, database=None,
        phases=phases, suppress_health_check=list(HealthCheck), print_blob=True))
