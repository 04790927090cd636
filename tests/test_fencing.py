"""Fencing: once a job was reaped and claimed again, every write of the stale attempt is
inert, and the exactly-once effect row exists only where a fenced completion committed."""

from __future__ import annotations

import asyncio

import pytest

from boundq.core import queue
from boundq.core.handlers import JobContext, Registry, register_builtins
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import (
    add_job,
    attempts,
    claim_one,
    expire_leases,
    job,
    rows,
    scalar,
    wait_until,
)

OLD, NEW = "owner-old", "owner-new"


async def _reclaimed(conn, new_owner: str = NEW):
    """A job claimed by OLD, reaped after its lease expired, and claimed again."""
    job_id = await add_job(conn, kind="effect", max_attempts=5)
    stale = await claim_one(conn, OLD)
    await expire_leases(conn, [job_id])
    assert await queue.reap_expired(conn) == {job_id: "new"}
    fresh = await claim_one(conn, new_owner)
    assert (fresh.id, fresh.attempt) == (job_id, 2)
    return stale, fresh


async def _stale_writes(conn, owner: str, key: tuple[int, int]) -> dict[str, object]:
    return {
        "complete": await queue.complete_batch(conn, owner, [key]),
        "fail": await queue.fail_batch(
            conn, owner, [Outcome(key[0], key[1], AttemptOutcome.ERROR, "stale")], 0, 0),
        "timeout": await queue.fail_batch(
            conn, owner, [Outcome(key[0], key[1], AttemptOutcome.TIMEOUT, "stale")], 0, 0),
        "heartbeat": await queue.heartbeat(conn, owner, [key], 30),
        "release": await queue.release_batch(conn, owner, [key]),
    }


@pytest.mark.parametrize(
    "who",
    ["stale owner, stale attempt", "same owner, stale attempt", "other owner, current attempt"],
)
async def test_stale_writes_change_nothing(conn, who) -> None:
    new_owner = OLD if who == "same owner, stale attempt" else NEW
    stale, fresh = await _reclaimed(conn, new_owner)
    if who == "other owner, current attempt":
        owner, key = OLD, (fresh.id, fresh.attempt)
    else:
        owner, key = OLD, (stale.id, stale.attempt)
    before_job = await job(conn, fresh.id)
    before_attempts = await attempts(conn, fresh.id)

    results = await _stale_writes(conn, owner, key)

    assert all(not r for r in results.values()), results
    assert await job(conn, fresh.id) == before_job
    assert await attempts(conn, fresh.id) == before_attempts
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 0
    # The current attempt is untouched and still completes.
    assert await queue.complete_batch(conn, new_owner, [(fresh.id, fresh.attempt)]) == {fresh.id}


async def test_stale_writes_after_cancel_change_nothing(conn) -> None:
    job_id = await add_job(conn, kind="effect")
    c = await claim_one(conn, OLD)
    await queue.cancel(conn, job_id)
    before = await job(conn, job_id)
    results = await _stale_writes(conn, OLD, (c.id, c.attempt))
    assert all(not r for r in results.values()), results
    assert await job(conn, job_id) == before
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 0


async def test_effect_row_written_once_by_the_committed_completion(conn) -> None:
    stale, fresh = await _reclaimed(conn)
    assert await queue.complete_batch(conn, OLD, [(stale.id, stale.attempt)]) == set()
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 0
    assert await queue.complete_batch(conn, NEW, [(fresh.id, fresh.attempt)]) == {fresh.id}
    # A repeated completion (a retry after a lost answer) adds nothing, and is reported as
    # committed (the owner's own earlier write), not as fenced; the stale owner still is.
    assert await queue.complete_batch(conn, NEW, [(fresh.id, fresh.attempt)]) == {fresh.id}
    assert await queue.complete_batch(conn, OLD, [(stale.id, stale.attempt)]) == set()
    effects = await rows(conn, "SELECT job_id, attempt FROM job_effects")
    assert effects == [{"job_id": fresh.id, "attempt": 2}]


async def test_effect_row_only_for_effect_jobs_and_only_on_success(conn) -> None:
    plain = await add_job(conn, name="plain")
    failing = await add_job(conn, name="failing", kind="effect", max_attempts=1)
    c = await claim_one(conn, OLD)
    assert c.id == plain
    await queue.complete_batch(conn, OLD, [(c.id, c.attempt)])
    c = await claim_one(conn, OLD)
    assert c.id == failing
    await queue.fail_batch(conn, OLD, [Outcome(c.id, c.attempt, AttemptOutcome.ERROR, "x")], 0, 0)
    assert (await job(conn, failing))["status"] == "failed"
    assert await scalar(conn, "SELECT count(*) FROM job_effects") == 0


async def test_worker_drops_the_result_of_a_lost_lease(db_url, conn) -> None:
    """A handler outlives its lease (the job was reaped and re-claimed meanwhile): the
    worker's completion is fenced, no effect row is written for the stale attempt."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_effect(ctx: JobContext) -> None:
        started.set()
        await release.wait()

    registry = Registry()
    register_builtins(registry)
    registry.register("effect", slow_effect)
    # A long heartbeat interval so the worker itself does not notice the loss first, and
    # one permit (held by the running job) so the worker cannot claim the job again itself.
    settings = fast_settings(lease_seconds=30, heartbeat_seconds=10, reap_interval_seconds=60,
                             max_concurrent_jobs=1)
    worker = Worker(settings, db_url, registry=registry)
    job_id = await add_job(conn, kind="effect")
    await worker.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        await expire_leases(conn, [job_id])
        assert await queue.reap_expired(conn) == {job_id: "new"}
        other = await claim_one(conn, NEW)
        assert other.attempt == 2
        release.set()

        async def fenced():
            return worker.metrics.fenced_writes >= 1

        await wait_until(fenced, 10, what="the stale completion to be fenced")
        row = await job(conn, job_id)
        assert (row["status"], row["lease_owner"], row["attempts"]) == ("processing", NEW, 2)
        assert await scalar(conn, "SELECT count(*) FROM job_effects") == 0
        assert await queue.complete_batch(conn, NEW, [(job_id, 2)]) == {job_id}
    finally:
        await worker.stop()
    assert await rows(conn, "SELECT job_id, attempt FROM job_effects") == [
        {"job_id": job_id, "attempt": 2}]
    assert [a["outcome"] for a in await attempts(conn, job_id)] == ["lost", "success"]
    assert worker.metrics.succeeded == 0


async def test_heartbeat_cancels_a_job_whose_lease_was_lost(db_url, conn) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def endless(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    registry = Registry()
    register_builtins(registry)
    registry.register("endless", endless)
    worker = Worker(fast_settings(reap_interval_seconds=60), db_url, registry=registry)
    job_id = await add_job(conn)
    await conn.execute("UPDATE jobs SET kind = 'endless' WHERE id = %s", (job_id,))
    await worker.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        await queue.cancel(conn, job_id)
        await asyncio.wait_for(cancelled.wait(), 5)
        await wait_until(lambda: _free(worker), 5, what="the permit back")
    finally:
        await worker.stop()
    assert worker.metrics.lost_leases >= 1
    assert (await job(conn, job_id))["status"] == "cancelled"
    assert [a["outcome"] for a in await attempts(conn, job_id)] == ["cancelled"]


async def _free(worker: Worker) -> bool:
    return worker.permits.free == worker.permits.total


async def test_heartbeats_keep_a_job_longer_than_its_lease(db_url, conn) -> None:
    """A job running twice its lease, next to a reaper sweeping every 0.2 s, is never reaped:
    the heartbeat (a fifth of the lease) keeps extending it."""
    settings = fast_settings()
    job_id = await add_job(conn, kind="sleep", payload={"ms": int(settings.lease_seconds * 2000)})
    worker = Worker(settings, db_url)
    await worker.start()
    try:
        await wait_until(lambda: _status(conn, job_id, "success"), 15, what="long job done")
    finally:
        await worker.stop()
    assert [a["outcome"] for a in await attempts(conn, job_id)] == ["success"]
    assert worker.metrics.lost_leases == 0 and worker.metrics.reaped == 0


async def _status(conn, job_id: int, status: str) -> bool:
    return (await job(conn, job_id))["status"] == status


async def test_failure_retried_after_a_lost_answer_is_reported_not_rewritten(conn) -> None:
    stale, fresh = await _reclaimed(conn)
    failure = Outcome(fresh.id, fresh.attempt, AttemptOutcome.ERROR, "boom")
    first = await queue.fail_batch(conn, NEW, [failure], 0, 0)
    after_first = await job(conn, fresh.id)
    # The retry reports the owner's own committed failure and writes nothing again.
    assert await queue.fail_batch(conn, NEW, [failure], 0, 0) == first
    assert await job(conn, fresh.id) == after_first
    stale_failure = Outcome(stale.id, stale.attempt, AttemptOutcome.ERROR, "late")
    assert await queue.fail_batch(conn, OLD, [stale_failure], 0, 0) == {}
