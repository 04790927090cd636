"""Permits (the RAII guarantee): whatever happens to a job's task (cancelled while waiting,
cancelled mid-run, crashing, cancelled before it ever ran), every permit comes back.
And a Claim is consumed by its first finish."""

from __future__ import annotations

import asyncio

import pytest

from boundq.core.claim import Claim
from boundq.core.errors import ClaimAlreadyFinished
from boundq.core.handlers import JobContext, Registry, register_builtins
from boundq.core.permits import Permits, release_all
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import add_job, add_jobs, attempts, claimed_row, job, scalar, wait_until


async def _settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# --- the Permits object -------------------------------------------------------------------

def test_grant_takes_up_to_n_and_returns_what_it_did_not_hand_out() -> None:
    permits = Permits(5)
    with permits.try_take(3) as grant:
        assert (grant.count, permits.free) == (3, 2)
        first = grant.take()
        with permits.try_take(10) as rest:
            assert (rest.count, permits.free) == (2, 0)
        assert permits.free == 2
    assert permits.free == 4  # two untaken permits of the first grant came back
    first.release()
    first.release()  # idempotent
    assert permits.free == permits.total == 5
    assert permits.high_water == 5


def test_grant_cannot_hand_out_more_than_it_holds() -> None:
    permits = Permits(2)
    with pytest.raises(RuntimeError), permits.try_take(1) as grant:
        grant.take()
        grant.take()
    assert permits.free == 1  # the one taken is held by its (dropped) Permit


def test_grant_block_raising_returns_its_permits() -> None:
    permits = Permits(3)
    with pytest.raises(ZeroDivisionError), permits.try_take(3):
        _ = 1 / 0
    assert permits.free == 3


def test_an_absorbed_permit_counts_without_a_gap() -> None:
    """A finished job's permit passes to its successor: it never goes back to the pool in
    between, so a permit-count reader (and on_free) sees no moment with it free."""
    freed: list[int] = []
    permits = Permits(2)
    permits.on_free = lambda: freed.append(permits.free)
    with permits.try_take(1) as grant:
        job_permit = grant.take()
    with permits.try_take(0) as passing:
        passing.absorb(job_permit)
        assert (permits.in_use, passing.left) == (1, 1)
        successor = passing.take()
    assert freed == [], "the permit went through the pool"
    assert permits.in_use == 1
    with pytest.raises(ValueError):
        Permits(1).try_take(1).absorb(successor)  # another pool's permit: refused
    job_permit.release()  # the absorbed permit is spent: releasing it returns nothing
    assert permits.in_use == 1
    successor.release()
    assert permits.free == 2 and freed == [2]


def test_a_detached_grant_keeps_its_permits_past_the_block() -> None:
    permits = Permits(3)
    with permits.try_take(3) as grant:
        grant.take()
        kept = grant.detach()
    assert (permits.free, kept.left) == (0, 2)
    kept.close()
    assert permits.free == 2


def test_a_closed_pool_hands_out_nothing_and_held_permits_still_return() -> None:
    permits = Permits(2)
    with permits.try_take(1) as grant:
        held = grant.take()
    permits.close()
    with permits.try_take(2) as nothing:
        assert nothing.count == 0
    held.release()
    assert permits.free == permits.total


def test_release_all_gives_back_once_per_pool() -> None:
    calls: list[int] = []
    permits = Permits(4, on_free=lambda: calls.append(permits.free))
    with permits.try_take(4) as grant:
        taken = [grant.take() for _ in range(4)]
    release_all(taken[:3])
    release_all(taken[:3])  # already released: nothing more
    assert calls == [3] and permits.free == 3
    taken[3].release()
    assert permits.free == 4


# --- permits of job tasks in a worker -------------------------------------------------------

def _registry() -> tuple[Registry, dict[str, asyncio.Event]]:
    events = {"started": asyncio.Event(), "cancelled": asyncio.Event()}

    async def block(ctx: JobContext) -> None:
        events["started"].set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events["cancelled"].set()
            raise

    async def crash(ctx: JobContext) -> None:
        raise RuntimeError("handler crashed")

    registry = Registry()
    register_builtins(registry)
    registry.register("block", block)
    registry.register("crash", crash)
    return registry, events


async def _kind(conn, job_id: int, kind: str) -> None:
    await conn.execute("UPDATE jobs SET kind = %s WHERE id = %s", (kind, job_id))


async def test_job_cancelled_mid_run_returns_its_permit(db_url, conn) -> None:
    registry, events = _registry()
    worker = Worker(fast_settings(max_concurrent_jobs=3), db_url, registry=registry)
    job_id = await add_job(conn)
    await _kind(conn, job_id, "block")
    await worker.start()
    try:
        await asyncio.wait_for(events["started"].wait(), 10)
        (claim,) = [c for c in worker.ledger.claims.values() if c.id == job_id]
        assert claim.task is not None
        claim.task.cancel()
        await asyncio.wait_for(events["cancelled"].wait(), 5)
        await wait_until(lambda: _all_free(worker), 5, what="the permit back")
        # The worker goes on working.
        other = await add_job(conn, name="after")
        await wait_until(lambda: _status_is(conn, other, "success"), 10, what="next job")
    finally:
        await worker.stop()
    assert worker.permits.free == worker.permits.total
    # stop() handed the interrupted job back.
    row = await job(conn, job_id)
    assert row["status"] == "new"
    assert [(a["outcome"], a["error"]) for a in await attempts(conn, job_id)] == [
        ("lost", "released at worker shutdown")]


async def test_crashing_handlers_return_their_permits(db_url, conn) -> None:
    registry, _ = _registry()
    worker = Worker(fast_settings(max_concurrent_jobs=2), db_url, registry=registry)
    ids = await add_jobs(conn, 6, max_attempts=2)
    for job_id in ids:
        await _kind(conn, job_id, "crash")
    good = await add_jobs(conn, 4)
    await worker.start()
    try:
        async def settled():
            n = await scalar(conn, "SELECT count(*) FROM jobs WHERE status IN "
                                   "('success', 'failed')")
            return n == len(ids) + len(good)

        await wait_until(settled, 15, what="all jobs settled")
        await wait_until(lambda: _all_free(worker), 5, what="permits back")
    finally:
        await worker.stop()
    assert worker.permits.free == worker.permits.total
    assert worker.permits.high_water <= 2
    for job_id in ids:
        row = await job(conn, job_id)
        assert (row["status"], row["attempts"]) == ("failed", 2)
        assert "handler crashed" in row["last_error"]
    for job_id in good:
        assert (await job(conn, job_id))["status"] == "success"


async def test_cancelled_error_raised_inside_a_handler_is_a_recorded_failure(db_url, conn) -> None:
    """A handler awaiting a sub-task that gets cancelled sees CancelledError although its own
    task was not cancelled: that is the job's failure, not a shutdown. (Before the fix the
    job stayed `processing`, its lease heartbeated, with nothing running it.)"""

    async def awaits_cancelled_subtask(ctx: JobContext) -> None:
        sub = asyncio.create_task(asyncio.sleep(3600))
        await asyncio.sleep(0)
        sub.cancel()
        await sub

    registry = Registry()
    register_builtins(registry)
    registry.register("subcancel", awaits_cancelled_subtask)
    worker = Worker(fast_settings(), db_url, registry=registry)
    job_id = await add_job(conn, max_attempts=2)
    await _kind(conn, job_id, "subcancel")
    other = await add_job(conn, name="other")
    await worker.start()
    try:
        await wait_until(lambda: _status_is(conn, job_id, "failed"), 10, what="dead letter")
        await wait_until(lambda: _status_is(conn, other, "success"), 10, what="other job")
        await wait_until(lambda: _all_free(worker), 5, what="permits back")
    finally:
        await worker.stop()
    found = await attempts(conn, job_id)
    assert [a["outcome"] for a in found] == ["error", "error"]
    assert "CancelledError" in (await job(conn, job_id))["last_error"]


async def test_jobs_cancelled_at_shutdown_return_their_permits(db_url, conn) -> None:
    registry, _ = _registry()
    worker = Worker(fast_settings(max_concurrent_jobs=4), db_url, registry=registry)
    ids = await add_jobs(conn, 6)
    for job_id in ids:
        await _kind(conn, job_id, "block")
    await worker.start()
    await wait_until(lambda: _in_use(worker, 4), 10, what="four jobs running")
    await worker.stop(grace_s=0.2)
    assert worker.permits.free == worker.permits.total
    statuses = await scalar(conn, "SELECT array_agg(DISTINCT status::text) FROM jobs")
    assert statuses == ["new"]
    assert await scalar(conn, "SELECT count(*) FROM job_attempts WHERE outcome = 'lost' "
                              "AND error = 'released at worker shutdown'") == 4


async def test_task_cancelled_before_it_ever_ran_returns_its_permit(db_url) -> None:
    worker = Worker(fast_settings(max_concurrent_jobs=2), db_url)
    with worker.permits.try_take(2) as grant:
        for i in (1, 2):
            worker.spawn(claimed_row(i), grant.take())
    assert worker.permits.free == 0
    claims = list(worker.ledger.claims.values())
    for claim in claims:
        assert claim.task is not None
        claim.task.cancel()  # before the event loop ever ran it
    await _settle()
    assert all(c.task is not None and c.task.cancelled() for c in claims)
    assert worker.permits.free == worker.permits.total
    assert worker.metrics.in_flight == 0


# --- a Claim is consumed by its first finish ------------------------------------------------

def test_claim_finished_twice_raises() -> None:
    claim = Claim(7, 1, "noop", {}, None, "me")
    assert not claim.finished
    claim.finish()
    assert claim.finished
    with pytest.raises(ClaimAlreadyFinished):
        claim.finish()


async def test_submitting_one_claim_twice_raises(db_url) -> None:
    worker = Worker(fast_settings(), db_url)
    await worker.start()
    try:
        claim = Claim(7, 1, "noop", {}, None, worker.owner)
        outcome = Outcome(7, 1, AttemptOutcome.SUCCESS)
        with worker.permits.try_take(2) as grant:
            worker.ledger.put((claim, outcome, grant.take()))
            with pytest.raises(ClaimAlreadyFinished):
                worker.ledger.put((claim, outcome, grant.take()))

        async def settled() -> bool:
            return worker.ledger.unwritten == 0

        await wait_until(settled, 5, what="the one submitted outcome written")
        assert worker.metrics.fenced_writes == 1  # no such job: fenced, not written
        assert len(worker.ledger.pending) == 0
    finally:
        await worker.stop()


async def _all_free(worker: Worker) -> bool:
    return worker.permits.free == worker.permits.total


async def _in_use(worker: Worker, n: int) -> bool:
    return worker.permits.in_use == n


async def _status_is(conn, job_id: int, status: str) -> bool:
    return (await job(conn, job_id))["status"] == status
