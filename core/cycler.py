"""The claim loop: one statement per cycle writes finished jobs and claims their successors.

A cycle takes the outcomes waiting in the outbox. Failures (rare) are written first, in
their own statement. Then one statement (job_complete_and_claim) writes the successes
and claims new jobs for their permits plus any free ones, so a permit passes from a
finished job to the next without a round trip in between: at the seed's settings (5
permits, 10 ms jobs) the cycle around each job is one statement, not three hops (a
completion, a permit returned, a claim). At high load outcomes batch up by themselves
and one statement carries hundreds.

A statement whose answer is lost (the connection broke) may have committed. Its outcomes
and all its permits are then held back as an Ambiguity, and before anything else this
process claims, a reconciliation (under the gate, with no claim of this process in
flight) reads every row the database says this owner holds `processing`: outcomes whose
rows are still held go back to the outbox; rows nobody here knows about were claimed by
the lost statement and are adopted (run) with the held permits; the rest go back to the
pool. So MAX_CONCURRENT_JOBS bounds the rows this owner holds at every instant, lost
answers included.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from boundq.core import queue, tracing
from boundq.core.faults import crash_point, lose_answer
from boundq.core.floors import ClaimFloors
from boundq.core.lanes import Lane
from boundq.core.ledger import Ledger, Pending
from boundq.core.loops import TRANSIENT_ERRORS, BackgroundLoop, LoopSettings
from boundq.core.metrics import Metrics
from boundq.core.permits import Grant, Permit, Permits
from boundq.core.planner import QueuePlanner, Split
from boundq.core.queue import ClaimedRow

log = logging.getLogger("boundq.worker")

# Most outcomes one statement writes.
BATCH_MAX = 1000
# Errors after which nobody can say whether the statement committed.
AMBIGUOUS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, asyncio.CancelledError)


@dataclass(frozen=True, slots=True)
class CycleConfig:
    owner: str
    lease_s: float
    claim_batch: int  # most free permits one cycle adds to those it passes on
    retry_base_s: float
    retry_max_s: float
    deadline_s: float  # a statement taking longer is abandoned (connection dropped)


class ClaimGate:
    """Claims of one process run side by side (shared); a reconciliation runs alone, with
    no claim in flight (exclusive), so every held row it finds is attributable."""

    def __init__(self) -> None:
        self._claims = 0
        self._reconciling = False
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def claiming(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._reconciling)
            self._claims += 1
        try:
            yield
        finally:
            async with self._changed:
                self._claims -= 1
                self._changed.notify_all()

    async def quiet(self) -> None:
        """Until no claim statement is in flight (the caller stopped new ones first)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._claims == 0)

    @contextlib.asynccontextmanager
    async def reconciling(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._reconciling)
            self._reconciling = True
            await self._changed.wait_for(lambda: self._claims == 0)
        try:
            yield
        finally:
            async with self._changed:
                self._reconciling = False
                self._changed.notify_all()


Spawn = Callable[[ClaimedRow, Permit], None]


class Cycler(BackgroundLoop):
    name = "cycler"

    def __init__(self, settings: LoopSettings, config: CycleConfig, lane: Lane, ledger: Ledger,
                 permits: Permits, planner: QueuePlanner, gate: ClaimGate, spawn: Spawn,
                 metrics: Metrics, floors: ClaimFloors | None = None) -> None:
        super().__init__(settings, metrics)
        self.metrics: Metrics = metrics
        self.config = config
        self.lane = lane
        self.ledger = ledger
        self.permits = permits
        self.planner = planner
        self.gate = gate
        self.spawn = spawn
        self.floors = floors or ClaimFloors()
        self.claiming = True  # off at shutdown: only outcomes are written then
        self._more = False

    def full(self, handled: int) -> bool:
        return bool(self.ledger.pending) or bool(self.ledger.ambiguous) or (
            self._more and self.claiming and self.permits.free > 0)

    async def run_once(self) -> int:
        self._more = False
        if self.ledger.ambiguous:
            await self.reconcile()
        successes, failures = self.ledger.take(BATCH_MAX)
        with self.permits.try_take(0) as grant:
            if failures:
                try:
                    await self._write_failures(failures, grant)
                except BaseException:
                    self.ledger.put_back(successes)
                    raise
            for _, _, permit in successes:
                grant.absorb(permit)
            if self.claiming:
                self._top_up(grant)
            if not successes and grant.count == 0:
                return len(failures)
            return len(failures) + await self._cycle(successes, grant)

    def _top_up(self, grant: Grant) -> None:
        """Add free permits to those passed on, up to the claim batch."""
        wanted = self.config.claim_batch - grant.count
        if wanted > 0:
            extra = self.permits.try_take(wanted)
            for _ in range(extra.count):
                grant.absorb(extra.take())
            extra.close()

    async def _write_failures(self, failures: list[Pending], grant: Grant) -> None:
        c = self.config
        started = tracing.now_ns()  # tracing (core/tracing): the statement's span times
        try:
            async with self.lane.connection(c.deadline_s) as conn:
                statuses = await queue.fail_batch(conn, c.owner, [p[1] for p in failures],
                                                  c.retry_base_s, c.retry_max_s)
        except BaseException:
            self.ledger.put_back(failures)  # retried as they are; a lost answer is
            raise                           # recognised then (queue.fail_batch)
        self._settle(failures, set(statuses))
        if tracing.ENABLED:  # tracing: a complete span per failed attempt, once per batch
            tracing.failures_written(c.owner, started, failures, statuses)
        self.metrics.failed += len(statuses)
        retried = sum(1 for s in statuses.values() if s != "failed")
        self.metrics.retried += retried
        self.metrics.dead_lettered += len(statuses) - retried
        for _, _, permit in failures:  # their rows left `processing` in that commit
            grant.absorb(permit)

    async def _cycle(self, successes: list[Pending], grant: Grant) -> int:
        c = self.config
        split = self.planner.split(grant.count) if self.claiming else Split([], [], {})
        results = {p[0].id: p[1].result_json for p in successes if p[1].result_json is not None}
        chained = {p[0].id: p[1].followups_json for p in successes
                   if p[1].followups_json is not None}
        free = grant.count - len(successes)
        floors = self.floors.scan([q for q, _ in split.fast])
        started = tracing.now_ns()  # tracing (core/tracing): the statement's span times
        try:
            async with self.gate.claiming(), self.lane.connection(c.deadline_s) as conn:
                completed, claimed = await queue.complete_and_claim(
                    conn, c.owner, [p[0].key for p in successes], split.fast, c.lease_s,
                    results, free=free, oldest=split.oldest, followups=chained,
                    floors=floors)
                await lose_answer("claim", bool(claimed))
        except AMBIGUOUS:
            # Committed or not, nobody can say: keep every permit until a reconciliation
            # reads what this owner holds.
            self.ledger.hold_ambiguous(successes, grant.detach())
            raise
        except BaseException:  # the server refused the statement: nothing was written
            # Their rows are still ours: each outcome goes back with a permit of the grant
            # (the ones it came with were absorbed), so closing the grant returns only the
            # free permits it took.
            self.ledger.put_back([(claim, outcome, grant.take())
                                  for claim, outcome, _ in successes])
            raise
        finally:
            self.floors.ended(floors)
        crash_point("after_commit", bool(completed))
        crash_point("after_claim", bool(claimed))
        if tracing.ENABLED:  # tracing: complete and claim spans, checked once per statement
            tracing.cycled(c.owner, started, successes, completed, claimed)
        self._settle(successes, completed)
        self.metrics.succeeded += len(completed)
        cap = min(sum(n for _, n in split.fast), len(completed) + free)
        self.floors.observe(dict(split.fast), claimed, capped=len(claimed) >= cap)
        self._spawn_all(claimed, grant)
        # A finished job of a limited queue may have made room there.
        self.planner.wake({p[0].queue for p in successes if self.planner.limited(p[0].queue)})
        if split.limited:
            # Permits of fenced completions stay back, as in the statement above.
            room = grant.left - (len(successes) - len(completed))
            claimed += await self._claim_limited(split, grant, room)
        if split.total:
            self._more = self.planner.claimed(split.queues(),
                                              Counter(row.queue for row in claimed))
        return len(successes) + len(claimed)

    async def _claim_limited(self, split: Split, grant: Grant, room: int) -> list[ClaimedRow]:
        """The queues with limits (or all, while a kind has one): one call each, in their
        own transactions, under the gate like every claim."""
        c = self.config
        got: list[ClaimedRow] = []
        try:
            async with self.gate.claiming(), self.lane.connection(c.deadline_s) as conn:
                for name, n in split.limited:
                    take = min(n, room - len(got))
                    if take <= 0:
                        break
                    started = tracing.now_ns()  # tracing (core/tracing): span times
                    rows = await queue.claim_limited(conn, c.owner, name, take, c.lease_s,
                                                     oldest=split.oldest.get(name, 0))
                    await lose_answer("claim", bool(rows))
                    crash_point("after_claim", bool(rows))
                    if tracing.ENABLED:  # tracing: claim spans, before the jobs' run spans
                        tracing.claimed(c.owner, started, rows)
                    self._spawn_all(rows, grant)
                    got += rows
        except AMBIGUOUS:
            # The rows of a lost answer are found and adopted by the reconciliation.
            self.ledger.hold_ambiguous([], grant.detach())
            raise
        return got

    def _spawn_all(self, rows: list[ClaimedRow], grant: Grant) -> None:
        for row in rows:
            self.spawn(row, grant.take())
            self.metrics.queue_wait.observe(row.waited_s)
        self.metrics.claimed += len(rows)

    def _settle(self, items: list[Pending], committed: set[int], taken: bool = True) -> None:
        if taken:
            self.ledger.settled(items)
        else:
            self.ledger.forget(items)
        for claim, outcome, _ in items:
            if claim.id not in committed:
                self.metrics.fenced_writes += 1
                log.warning("write fenced: job %d attempt %d is no longer ours", claim.id,
                            claim.attempt, extra={"job_id": claim.id, "attempt": claim.attempt,
                                                  "outcome": outcome.outcome.value})

    async def reconcile(self) -> None:
        """Settle every lost answer against what the database says this owner holds."""
        c = self.config
        async with self.gate.reconciling():
            if not self.ledger.ambiguous:
                return  # another loop did it while this one waited
            cases = list(self.ledger.ambiguous)
            async with self.lane.connection(c.deadline_s) as conn:
                held = {(row.id, row.attempt): row
                        for row in await queue.held_by_owner(conn, c.owner)}
                unheld = [p for case in cases for p in case.successes if p[0].key not in held]
                done = await queue.settled_successes(conn, c.owner, [p[0].key for p in unheld])
            del self.ledger.ambiguous[:len(cases)]
            grants = [case.grant for case in cases]
            still_held = [p for case in cases for p in case.successes if p[0].key in held]
            known = set(self.ledger.claims)
            adopted = [row for key, row in held.items() if key not in known]
            room = sum(g.left for g in grants) - len(still_held)
            if len(adopted) > room:  # cannot happen unless a claim took more than its limit
                log.error("reconciliation: %d unknown held rows, permits for %d; releasing the "
                          "rest", len(adopted), room)
                extra, adopted = adopted[room:], adopted[:room]
                async with self.lane.connection(c.deadline_s) as conn:
                    await queue.release_batch(conn, c.owner, [(r.id, r.attempt) for r in extra])
            # Their completion did not commit: back to the outbox, each with a permit.
            self.ledger.requeue([(claim, outcome, _take(grants))
                                 for claim, outcome, _ in still_held])
            self._settle(unheld, done, taken=False)
            if tracing.ENABLED:  # tracing (core/tracing): spans of what the lost answer did
                tracing.reconciled(c.owner, unheld, done, adopted if self.claiming else [])
            self.metrics.succeeded += len(done)
            if self.claiming:
                for row in adopted:
                    self.spawn(row, _take(grants))
            elif adopted:  # shutting down: hand them back at once instead
                async with self.lane.connection(c.deadline_s) as conn:
                    await queue.release_batch(conn, c.owner,
                                              [(r.id, r.attempt) for r in adopted])
            for grant in grants:
                grant.close()
            log.warning("reconciled %d lost answers: %d outcomes to write again, %d settled, "
                        "%d claims adopted", len(cases), len(still_held), len(unheld),
                        len(adopted), extra={"adopted": len(adopted)})


def _take(grants: list[Grant]) -> Permit:
    for grant in grants:
        if grant.left:
            return grant.take()
    # More rows than the lost statements could have claimed: a bug, never a second permit.
    raise AssertionError("reconciliation found more held rows than held permits")

