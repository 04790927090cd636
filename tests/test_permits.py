"""Permits (the RAII guarantee): whatever happens to a job's task (cancelled while waiting,
cancelled mid-run, crashing, cancelled before it ever ran), every permit comes back.
And a Claim is consumed by its first finish."""

from __future__ import annotations

import asyncio

import pytest

from boundq.core.claim import Claim
from boundq.core.errors import ClaimAlreadyFinished
from boundq.core.handlers import JobContext, Registry, register_builtins
from boundq.core.permits import Permits, PermitsClosed, release_all
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import add_job, add_jobs, attempts, job, scalar, wait_until


async def _settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


# --- the Permits object -------------------------------------------------------------------

async def test_grant_takes_up_to_n_and_returns_what_it_did_not_hand_out() -> None:
    permits = Permits(5)
    async with permits.acquire_up_to(3) as grant:
        assert (grant.count, permits.free) == (3, 2)
        first = grant.take()
        async with permits.acquire_up_to(10) as rest:
            assert (rest.count, permits.free) == (2, 0)
        assert permits.free == 2
    assert permits.free == 4  # two untaken permits of the first grant came back
    async with first:
        pass
    first.release()  # idempotent
    assert permits.free == permits.total == 5
    assert permits.high_water == 5


async def test_grant_cannot_hand_out_more_than_it_holds() -> None:
    permits = Permits(2)
    with pytest.raises(RuntimeError):
        async with permits.acquire_up_to(1) as grant:
            grant.take()
            grant.take()
    assert permits.free == 1  # the one taken is held by its (dropped) Permit


async def test_grant_block_raising_returns_its_permits() -> None:
    permits = Permits(3)
    with pytest.raises(ZeroDivisionError):
        async with permits.acquire_up_to(3):
            _ = 1 / 0
    assert permits.free == 3


async def test_cancelling_a_task_waiting_for_a_permit() -> None:
    permits = Permits(1)
    async with permits.acquire_up_to(1) as grant:
        held = grant.take()
    entered = asyncio.Event()

    async def wait_for_permit() -> None:
        async with permits.acquire_up_to(1) as grant:
            entered.set()
            async with grant.take():
                await asyncio.sleep(3600)

    waiting = asyncio.create_task(wait_for_permit())
    await _settle()
    assert not entered.is_set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    held.release()
    assert permits.free == permits.total
    # Nothing is left waiting that could swallow a later wake-up.
    async with permits.acquire_up_to(1) as grant:
        assert grant.count == 1


async def test_a_batch_release_wakes_a_waiter_per_permit() -> None:
    """The completer returns a written batch's permits at once: every acquirer waiting
    must get its share, not only the first one woken."""
    permits = Permits(3)
    async with permits.acquire_up_to(3) as grant:
        held = [grant.take() for _ in range(3)]
    got: list[int] = []

    async def acquirer() -> None:
        async with permits.acquire_up_to(1) as grant:
            got.append(grant.count)
            async with grant.take():
                await asyncio.sleep(3600)

    waiting = [asyncio.create_task(acquirer()) for _ in range(3)]
    await _settle()
    assert got == []
    release_all(held[:2])
    await _settle()
    assert got == [1, 1], "two permits came back, so two waiters must run"
    release_all(held)  # the third comes back; the two already returned are not counted twice
    await _settle()
    assert got == [1, 1, 1] and permits.free == 0
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert permits.free == permits.total


async def test_woken_and_cancelled_at_once_passes_the_wake_up_on() -> None:
    permits = Permits(1)
    async with permits.acquire_up_to(1) as grant:
        held = grant.take()
    got: list[str] = []

    async def acquirer(name: str) -> None:
        async with permits.acquire_up_to(1) as grant, grant.take():
            got.append(name)

    first = asyncio.create_task(acquirer("first"))
    second = asyncio.create_task(acquirer("second"))
    await _settle()
    held.release()  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 2)  # the wake-up went on to `second`
    assert got == ["second"]
    assert permits.free == permits.total


async def test_close_wakes_waiters_and_held_permits_still_return() -> None:
    permits = Permits(1)
    async with permits.acquire_up_to(1) as grant:
        held = grant.take()

    async def wait() -> None:
        async with permits.acquire_up_to(1):
            pass

    waiter = asyncio.create_task(wait())
    await _settle()
    permits.close()
    with pytest.raises(PermitsClosed):
        await waiter
    with pytest.raises(PermitsClosed):
        async with permits.acquire_up_to(1):
            pass
    held.release()
    assert permits.free == permits.total


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
    async with worker.permits.acquire_up_to(2) as grant:
        claims = [Claim(i, 1, "noop", {}, None, worker.owner) for i in (1, 2)]
        for claim in claims:
            worker.spawn(claim, grant.take())
    assert worker.permits.free == 0
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
        worker.completer.submit(claim, outcome)
        with pytest.raises(ClaimAlreadyFinished):
            worker.completer.submit(claim, outcome)

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
