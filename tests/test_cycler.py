"""The claim loop (core/cycler.py): each outcome is written once; a permit passes from a
finished job to its successor without going back to the pool; a statement whose answer
was lost is reconciled against what the database says this owner holds, so the rows the
owner holds `processing` never outnumber its permits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from boundq.core.claim import Claim
from boundq.core.cycler import ClaimGate, CycleConfig, Cycler
from boundq.core.lanes import Lane
from boundq.core.ledger import Ledger
from boundq.core.loops import LoopSettings
from boundq.core.metrics import Metrics
from boundq.core.permits import Permit, Permits
from boundq.core.planner import QueuePlanner
from boundq.core.queue import ClaimedRow, Outcome
from boundq.core.states import AttemptOutcome
from tests.helpers import add_jobs, scalar

OWNER = "cycler-test"


class LosingLane(Lane):
    """A real connection whose next statement's answer is lost: `lose_after` raises a
    connection error after the statement ran (committed, answer gone); `lose_before`
    raises before it ran."""

    lose_after = False
    lose_before = False

    @contextlib.asynccontextmanager
    async def connection(self, deadline_s: float | None = None) -> AsyncIterator[Any]:
        async with super().connection(deadline_s) as conn:
            if self.lose_before:
                self.lose_before = False
                raise psycopg.OperationalError("connection lost before the statement")
            yield conn
            if self.lose_after:
                self.lose_after = False
                raise psycopg.OperationalError("connection lost before the answer")


class Rig:
    def __init__(self, url: str, permits: int) -> None:
        self.url = url
        self.ledger = Ledger()
        self.permits = Permits(permits)
        self.metrics = Metrics()
        self.spawned: list[tuple[ClaimedRow, Permit]] = []
        self.lane = LosingLane(url, "worker")
        config = CycleConfig(OWNER, 30.0, claim_batch=permits, retry_base_s=0.05,
                             retry_max_s=0.2, deadline_s=10.0)
        self.cycler = Cycler(LoopSettings(1.0), config, self.lane, self.ledger, self.permits,
                             QueuePlanner(), ClaimGate(), self._spawn, self.metrics)

    def _spawn(self, row: ClaimedRow, permit: Permit) -> None:
        claim = Claim(row.id, row.attempt, row.kind, row.payload, row.timeout_s, OWNER)
        self.ledger.add(claim)
        self.spawned.append((row, permit))

    def finish(self, outcome: AttemptOutcome = AttemptOutcome.SUCCESS) -> int:
        """Report every spawned job as finished (what a job task does)."""
        n = len(self.spawned)
        for row, permit in self.spawned:
            claim = self.ledger.claims[(row.id, row.attempt)]
            self.ledger.put((claim, Outcome(row.id, row.attempt, outcome), permit))
        self.spawned.clear()
        return n


@pytest.fixture
async def rig(db_url: str) -> AsyncIterator[Rig]:
    made = Rig(db_url, permits=2)
    yield made
    await made.lane.close()


async def held(conn: Any) -> int:
    return int(await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'processing' "
                                  "AND lease_owner = %s", (OWNER,)))


async def test_a_permit_passes_from_a_finished_job_to_its_successor(rig: Rig, conn) -> None:
    await add_jobs(conn, 7, kind="effect")
    returned: list[int] = []
    rig.permits.on_free = lambda: returned.append(rig.permits.free)
    assert await rig.cycler.run_once() == 2  # two free permits: two claims
    assert (rig.permits.in_use, await held(conn)) == (2, 2)
    for _ in range(2):
        rig.finish()
        await rig.cycler.run_once()  # writes two, claims two, in one statement
        assert (rig.permits.in_use, await held(conn)) == (2, 2)
    assert returned == [], "a permit went back to the pool between a job and its successor"
    rig.finish()
    await rig.cycler.run_once()  # the last job, and no successor for the other permit
    assert (rig.permits.in_use, await held(conn)) == (1, 1)
    assert returned == [1], "the permit without a successor did not go back"
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == 6
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 6
    assert rig.metrics.fenced_writes == 0


async def test_concurrent_cycles_write_each_outcome_once(rig: Rig, conn) -> None:
    await add_jobs(conn, 2, kind="effect")
    await rig.cycler.run_once()
    rig.finish()
    second = Lane(rig.url, "worker")
    other = Cycler(LoopSettings(1.0), rig.cycler.config, second, rig.ledger, rig.permits,
                   rig.cycler.planner, rig.cycler.gate, rig._spawn, rig.metrics)
    try:
        await asyncio.gather(rig.cycler.run_once(), other.run_once())
    finally:
        await second.close()
    assert rig.ledger.unwritten == 0
    assert rig.metrics.succeeded == 2 and rig.metrics.fenced_writes == 0
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 2


async def test_a_claim_whose_answer_was_lost_is_adopted(rig: Rig, conn) -> None:
    """The claim committed, its answer never came (the soak run's bounded_concurrency
    violation): its permits stay held until a reconciliation finds the rows and runs them."""
    await add_jobs(conn, 4)
    rig.lane.lose_after = True
    with pytest.raises(psycopg.OperationalError):
        await rig.cycler.run_once()
    assert rig.spawned == [] and await held(conn) == 2
    assert rig.permits.in_use == 2, "the lost claim's permits went back to the pool"
    assert rig.cycler.full(0), "a lost answer must be settled before waiting"
    await rig.cycler.run_once()  # reconciles first, then cycles
    assert sorted(row.id for row, _ in rig.spawned) == sorted(
        r[0] for r in await (await conn.execute(
            "SELECT id FROM jobs WHERE status = 'processing'")).fetchall())
    assert (rig.permits.in_use, await held(conn)) == (2, 2)
    rig.finish()
    await rig.cycler.run_once()
    rig.finish()
    await rig.cycler.run_once()
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == 4
    assert rig.permits.in_use == 0


async def test_a_completion_whose_answer_was_lost_is_settled_once(rig: Rig, conn) -> None:
    await add_jobs(conn, 2, kind="effect")
    await rig.cycler.run_once()
    rig.finish()
    rig.lane.lose_after = True
    with pytest.raises(psycopg.OperationalError):
        await rig.cycler.run_once()  # completed both (no more jobs to claim); answer lost
    assert rig.permits.in_use == 2 and rig.ledger.unwritten == 2
    await rig.cycler.run_once()
    assert rig.ledger.unwritten == 0 and rig.permits.in_use == 0
    assert rig.metrics.succeeded == 2 and rig.metrics.fenced_writes == 0
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 2


async def test_a_statement_lost_before_it_ran_writes_its_outcomes_again(rig: Rig, conn) -> None:
    await add_jobs(conn, 2, kind="effect")
    await rig.cycler.run_once()
    rig.finish()
    rig.lane.lose_before = True
    with pytest.raises(psycopg.OperationalError):
        await rig.cycler.run_once()
    assert (rig.permits.in_use, await held(conn)) == (2, 2)
    await rig.cycler.run_once()  # reconciliation: still held, so back to the outbox
    assert rig.spawned == []
    await rig.cycler.run_once()
    assert rig.ledger.unwritten == 0 and rig.permits.in_use == 0
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 2


async def test_failures_are_written_and_their_permits_claim_successors(rig: Rig, conn) -> None:
    await add_jobs(conn, 4, kind="fail", payload={"times": 1}, max_attempts=1)
    await rig.cycler.run_once()
    rig.finish(AttemptOutcome.ERROR)
    await rig.cycler.run_once()
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'failed'") == 2
    assert (rig.permits.in_use, await held(conn)) == (2, 2)
    assert rig.metrics.dead_lettered == 2


async def test_a_failure_whose_answer_was_lost_is_counted_once_not_fenced(rig: Rig, conn
                                                                         ) -> None:
    """The failure committed, its answer never came; written again, the owner's own earlier
    write is recognised: counted as a retried failure, not as a fenced write."""
    await add_jobs(conn, 1, kind="fail", payload={"times": 1}, max_attempts=3)
    await rig.cycler.run_once()
    rig.finish(AttemptOutcome.ERROR)
    rig.lane.lose_after = True
    with pytest.raises(psycopg.OperationalError):
        await rig.cycler.run_once()
    assert rig.ledger.unwritten == 1 and rig.permits.in_use == 1
    await rig.cycler.run_once()
    assert (rig.metrics.failed, rig.metrics.retried, rig.metrics.fenced_writes) == (1, 1, 0)
    assert rig.ledger.unwritten == 0
    assert await scalar(conn, "SELECT count(*) FROM job_attempts WHERE outcome = 'error'") == 1
