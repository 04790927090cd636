"""Chaining: the follow-up jobs a handler creates (JobContext.enqueue, kind `echo`'s `then`)
are written by the statement that writes its success (job_complete_and_claim), so they
exist if and only if that success commits: none from a fenced attempt, once after a lost
answer, and a bad follow-up fails the attempt with an error naming it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from boundq.core import queue
from boundq.core.errors import JobValidationError
from boundq.core.handlers import JobContext, Registry, register_builtins
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import add_job, claim_one, expire_leases, rows, scalar, spec, wait_until
from tests.test_cycler import Rig

OLD, NEW = "owner-old", "owner-new"


def _followups(*items: dict[str, Any]) -> str:
    return queue.followups_json([spec(**item) for item in items])


async def _named(conn: Any, name: str) -> list[dict[str, Any]]:
    return await rows(conn, "SELECT *, xmin::text AS tx FROM jobs WHERE name = %s ORDER BY id",
                      (name,))


async def test_followups_are_written_by_the_statement_that_writes_the_success(conn) -> None:
    job_id = await add_job(conn, kind="echo", payload={"value": 1})
    c = await claim_one(conn, OLD)
    chained = _followups({"name": "next", "kind": "sleep", "payload": {"ms": 5}, "priority": 3,
                          "max_attempts": 2},
                         {"name": "later", "queue": "mail", "delay": 3600},
                         {"name": "keyed", "dedupe_key": "k"})
    assert await queue.complete_batch(conn, OLD, [(c.id, c.attempt)], {c.id: "1"},
                                      followups={c.id: chained}) == {job_id}
    parent = (await rows(conn, "SELECT *, xmin::text AS tx FROM jobs WHERE id = %s",
                         (job_id,)))[0]
    [now] = await _named(conn, "next")
    [later] = await _named(conn, "later")
    [keyed] = await _named(conn, "keyed")
    assert parent["status"] == "success" and parent["result"] == 1
    # One transaction wrote the success and every follow-up.
    assert now["tx"] == later["tx"] == keyed["tx"] == parent["tx"]
    assert (now["kind"], now["payload"], now["priority"], now["max_attempts"], now["status"],
            now["queue"]) == ("sleep", {"ms": 5}, 3, 2, "new", "default")
    assert (later["status"], later["queue"]) == ("scheduled", "mail")
    assert later["run_at"] > parent["finished_at"]
    assert keyed["dedupe_key"] == "k"


async def test_only_jobs_with_followups_get_them(conn) -> None:
    await add_job(conn, name="a")
    await add_job(conn, name="b")
    first, second = await claim_one(conn, OLD), await claim_one(conn, OLD)
    before = await scalar(conn, "SELECT count(*) FROM jobs")
    done = await queue.complete_batch(conn, OLD, [(first.id, 1), (second.id, 1)],
                                      followups={first.id: _followups({"name": "x"})})
    assert done == {first.id, second.id}
    assert await scalar(conn, "SELECT count(*) FROM jobs") == before + 1


async def test_a_fenced_attempt_creates_no_followups(conn) -> None:
    job_id = await add_job(conn, kind="echo", payload={"value": 1}, max_attempts=5)
    stale = await claim_one(conn, OLD)
    await expire_leases(conn, [job_id])
    assert await queue.reap_expired(conn) == {job_id: "new"}
    fresh = await claim_one(conn, NEW)
    chained = {job_id: _followups({"name": "next"})}
    assert await queue.complete_batch(conn, OLD, [(stale.id, stale.attempt)],
                                      followups=chained) == set()
    assert await _named(conn, "next") == []
    assert await queue.complete_batch(conn, NEW, [(fresh.id, fresh.attempt)],
                                      followups=chained) == {job_id}
    assert len(await _named(conn, "next")) == 1
    # The stale owner tries again: still fenced, still one.
    assert await queue.complete_batch(conn, OLD, [(stale.id, stale.attempt)],
                                      followups=chained) == set()
    assert len(await _named(conn, "next")) == 1


async def test_a_followup_whose_dedupe_key_is_held_is_skipped(conn) -> None:
    await add_job(conn, name="holder", dedupe_key="k", delay=3600)  # scheduled: still live
    parent = await add_job(conn, name="parent")
    c = await claim_one(conn, OLD)
    assert c.id == parent
    assert await queue.complete_batch(conn, OLD, [(c.id, c.attempt)], followups={
        c.id: _followups({"name": "dup", "dedupe_key": "k"})}) == {c.id}
    assert await _named(conn, "dup") == []


def _put(rig: Rig, followups: str) -> None:
    """Report every spawned job as a success carrying `followups` (what a job task does)."""
    for row, permit in rig.spawned:
        claim = rig.ledger.claims[(row.id, row.attempt)]
        rig.ledger.put((claim, Outcome(row.id, row.attempt, AttemptOutcome.SUCCESS,
                                       followups_json=followups), permit))
    rig.spawned.clear()


@pytest.fixture
async def rig(db_url: str):
    made = Rig(db_url, permits=1)
    yield made
    await made.lane.close()


@pytest.mark.parametrize("lost", ["after it committed", "before it ran"])
async def test_a_success_whose_answer_was_lost_creates_its_followups_once(
        rig: Rig, conn, lost: str) -> None:
    job_id = await add_job(conn, kind="echo", payload={"value": 1})
    await rig.cycler.run_once()
    _put(rig, _followups({"name": "next"}))
    if lost == "after it committed":
        rig.lane.lose_after = True
    else:
        rig.lane.lose_before = True
    with pytest.raises(psycopg.OperationalError):
        await rig.cycler.run_once()
    # Reconciliation: a committed success is settled; one that did not commit is written
    # again, with its follow-ups.
    while rig.ledger.unwritten:
        await rig.cycler.run_once()
    assert (await rows(conn, "SELECT status FROM jobs WHERE id = %s", (job_id,)))[0] == {
        "status": "success"}
    assert len(await _named(conn, "next")) == 1
    assert rig.metrics.fenced_writes == 0


async def test_enqueue_validates_at_the_call() -> None:
    registry = Registry()
    register_builtins(registry)
    settings = fast_settings()
    worker = Worker(settings, "postgresql://unused", registry=registry)
    ctx = JobContext(1, 1, "echo", {}, "o", make_job=worker._follow_up)
    ctx.enqueue("ok", kind="sleep", payload={"ms": 1}, queue="mail", priority=2)
    with pytest.raises(JobValidationError) as bad_kind:
        ctx.enqueue("x", kind="nope")
    assert bad_kind.value.field == "followup.kind"
    with pytest.raises(JobValidationError) as bad_payload:
        ctx.enqueue("x", kind="sleep", payload={"ms": -1})
    assert bad_payload.value.field == "followup.payload.ms"
    with pytest.raises(JobValidationError) as bad_field:
        ctx.enqueue("x", colour="red")
    assert bad_field.value.field == "followup.colour"
    assert [s.name for s in ctx.followups] == ["ok"]
    assert ctx.followups[0].max_attempts == settings.default_max_attempts
    with pytest.raises(RuntimeError):
        JobContext(1, 1, "noop", {}, "o").enqueue("x")


async def _run_worker(db_url: str, registry: Registry, done: Any) -> None:
    worker = Worker(fast_settings(max_concurrent_jobs=2, num_workers=1), db_url,
                    registry=registry)
    await worker.start()
    try:
        await wait_until(done, 30, what="jobs finished")
    finally:
        await worker.stop()


async def test_a_bad_followup_fails_the_attempt_with_a_clear_error(db_url: str, conn) -> None:
    registry = Registry()
    register_builtins(registry)

    async def chains_badly(job: JobContext) -> None:
        job.enqueue("good")  # valid, but the attempt fails: never written
        job.enqueue("bad", kind="no_such_kind")

    registry.register("chains_badly", chains_badly)
    job_id = await add_job(conn, kind="noop", max_attempts=1)
    await conn.execute("UPDATE jobs SET kind = 'chains_badly' WHERE id = %s", (job_id,))

    async def failed() -> bool:
        status = await scalar(conn, "SELECT status::text FROM jobs WHERE id = %s", (job_id,))
        return bool(status == "failed")

    await _run_worker(db_url, registry, failed)
    error = await scalar(conn, "SELECT last_error FROM jobs WHERE id = %s", (job_id,))
    assert "followup.kind" in error and "unknown job kind 'no_such_kind'" in error, error
    assert await _named(conn, "good") == [] and await _named(conn, "bad") == []


async def test_a_worker_runs_a_chain_of_echo_jobs(db_url: str, conn) -> None:
    registry = Registry()
    register_builtins(registry)
    payload = {"value": {"step": 1}, "then": {
        "name": "second", "kind": "echo", "payload": {"value": [2], "then": {
            "name": "third", "kind": "echo", "queue": "mail", "payload": {"value": "3"}}}}}
    first = await add_job(conn, name="first", kind="echo", payload=payload)

    async def settled() -> bool:
        n = await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'")
        return bool(n == 3)

    worker = Worker(fast_settings(max_concurrent_jobs=2, num_workers=1), db_url,
                    registry=registry)
    await worker.start()
    try:
        await wait_until(settled, 30, what="the chain finished")
    finally:
        await worker.stop()
    got = await rows(conn, "SELECT id, name, queue, result FROM jobs ORDER BY id")
    assert [(r["name"], r["queue"], r["result"]) for r in got] == [
        ("first", "default", {"step": 1}), ("second", "default", [2]), ("third", "mail", "3")]
    assert got[0]["id"] == first


async def test_echo_payload_is_validated_at_enqueue() -> None:
    for payload, field in [({}, "payload.value"),
                           ({"value": 1, "then": 5}, "payload.then"),
                           ({"value": 1, "then": {"kind": "nope"}}, "payload.then.kind"),
                           ({"value": 1, "then": {"kind": "sleep", "payload": {"ms": "x"}}},
                            "payload.then.payload.ms"),
                           ({"value": 1, "then": {"kind": "echo", "payload": {
                               "value": 1, "then": {"priority": 12}}}},
                            "payload.then.payload.then.priority")]:
        with pytest.raises(JobValidationError) as caught:
            spec(kind="echo", payload=payload)
        assert caught.value.field == field, (payload, caught.value)
    spec(kind="echo", payload={"value": None, "then": {"kind": "noop"}})


def test_followups_carry_payloads_as_validation_encoded_them() -> None:
    text = _followups({"name": "n", "payload": {"a": [1, "b"]}})
    assert '"payload":{"a":[1,"b"]}' in text


async def _notified_before_marker(listener: psycopg.AsyncConnection[Any], conn: Any) -> int:
    """New-job notifications that arrived before a marker sent now: notifications come
    in commit order, so this counts what committed before, with no waiting on a clock."""
    await conn.execute("SELECT pg_notify('boundq_jobs', 'marker')")
    seen = 0
    async for note in listener.notifies():
        if note.payload == "marker":
            return seen
        seen += 1
    raise AssertionError("the notification stream ended")


async def test_only_a_statement_that_inserted_jobs_wakes_the_workers(db_url, conn) -> None:
    """A claim cycle with no follow-up inserts no row and must send no NOTIFY (each takes
    the cluster's notification lock at commit and wakes every worker); a create, and a
    cycle whose success brings follow-ups, do."""
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        await listener.execute("LISTEN boundq_jobs")
        await add_job(conn, kind="echo", payload={"value": 1})
        assert await _notified_before_marker(listener, conn) == 1
        c = await claim_one(conn, OLD)
        await queue.complete_batch(conn, OLD, [(c.id, c.attempt)], {c.id: "1"})
        assert await _notified_before_marker(listener, conn) == 0
        await add_job(conn, kind="echo", payload={"value": 2})
        assert await _notified_before_marker(listener, conn) == 1
        c = await claim_one(conn, OLD)
        await queue.complete_batch(conn, OLD, [(c.id, c.attempt)], {c.id: "2"},
                                   followups={c.id: _followups({"name": "next"})})
        assert await _notified_before_marker(listener, conn) == 1
    finally:
        await listener.close()
