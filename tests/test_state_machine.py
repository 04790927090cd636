"""The job state machine: every allowed move happens through the queue functions, every
other move is refused by the database, terminal rows never change, and every path that
ends an attempt writes its job_attempts row (the running attempt is the jobs row)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import psycopg
import pytest

from boundq.core import queue
from boundq.core.errors import InvalidTransition, JobNotFound
from boundq.core.handlers import JobContext, default_registry
from boundq.core.queue import Outcome
from boundq.core.states import TERMINAL, TRANSITIONS, AttemptOutcome, JobStatus
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import (
    add_job,
    add_jobs,
    attempts,
    claim,
    claim_one,
    expire_leases,
    job,
    rows,
    scalar,
    wait_until,
)

OWNER = "owner-a"

_LOG_TRANSITIONS = """
CREATE TABLE test_transitions (job_id bigint, old_status job_status, new_status job_status);
CREATE FUNCTION test_log_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_transitions VALUES (OLD.id, OLD.status, NEW.status);
    RETURN NULL;
END;
$$;
CREATE TRIGGER test_log_transition AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION test_log_transition();
"""


async def _fail(conn, claimed, owner: str = OWNER, retryable: bool = True,
                outcome: AttemptOutcome = AttemptOutcome.ERROR) -> dict[int, str]:
    return await queue.fail_batch(
        conn, owner, [Outcome(claimed.id, claimed.attempt, outcome, "boom", retryable)], 0.0, 0.0
    )


async def test_every_allowed_transition_happens_through_the_queue_functions(conn) -> None:
    await conn.execute(_LOG_TRANSITIONS)

    # new -> processing -> success
    await add_job(conn, name="completes")
    c = await claim_one(conn)
    assert await queue.complete_batch(conn, OWNER, [(c.id, c.attempt)]) == {c.id}

    # processing -> new (error, attempts left), processing -> failed, failed -> new (retry)
    retried = await add_job(conn, name="retried", max_attempts=2)
    c = await claim_one(conn)
    assert await _fail(conn, c) == {retried: "new"}
    c = await claim_one(conn)
    assert await _fail(conn, c) == {retried: "failed"}
    await queue.retry(conn, retried)
    c = await claim_one(conn)
    assert await queue.complete_batch(conn, OWNER, [(c.id, c.attempt)]) == {retried}

    # processing -> scheduled (error, attempts left, a backoff), scheduled -> new (stager)
    backing_off = await add_job(conn, name="backing-off", max_attempts=2)
    c = await claim_one(conn)
    assert await queue.fail_batch(conn, OWNER, [Outcome(c.id, c.attempt, AttemptOutcome.ERROR,
                                                        "boom")], 0.05, 0.05) == {
        backing_off: "scheduled"}
    await conn.execute("UPDATE jobs SET run_at = now() WHERE id = %s", (backing_off,))
    assert await queue.stage_due(conn) == 1
    c = await claim_one(conn)
    assert await queue.complete_batch(conn, OWNER, [(c.id, c.attempt)]) == {backing_off}

    # new -> scheduled (a plain SQL row with a future run_at), scheduled -> cancelled
    await conn.execute("INSERT INTO jobs (name, run_at) VALUES ('later', now() + interval '1h')")
    assert await queue.schedule_early(conn, ["default"]) == 1
    later = await scalar(conn, "SELECT id FROM jobs WHERE name = 'later'")
    assert (await queue.cancel(conn, later))["status"] == "cancelled"

    # new -> cancelled, processing -> cancelled
    waiting = await add_job(conn, name="cancelled-waiting")
    assert (await queue.cancel(conn, waiting))["status"] == "cancelled"
    running = await add_job(conn, name="cancelled-running")
    c = await claim_one(conn)
    assert (await queue.cancel(conn, running))["status"] == "cancelled"

    # processing -> new by the reaper and by a release; processing -> failed by the reaper
    reaped = await add_job(conn, name="reaped", max_attempts=1)
    c = await claim_one(conn)
    await expire_leases(conn, [reaped])
    assert await queue.reap_expired(conn) == {reaped: "failed"}
    released = await add_job(conn, name="released", max_attempts=3)
    c = await claim_one(conn)
    await expire_leases(conn, [released])
    assert await queue.reap_expired(conn) == {released: "new"}
    c = await claim_one(conn)
    assert await queue.release_batch(conn, OWNER, [(c.id, c.attempt)]) == {released}

    # blocked -> new and blocked -> scheduled (the last parent's success), blocked ->
    # cancelled (cancel)
    parent = await add_job(conn, name="parent")
    now_child = await add_job(conn, name="child-now", depends_on=[parent])
    later_child = await add_job(conn, name="child-later", depends_on=[parent], delay=3600)
    dropped = await add_job(conn, name="child-cancelled", depends_on=[parent])
    assert (await queue.cancel(conn, dropped))["status"] == "cancelled"
    got = await claim(conn, OWNER, 5)  # the parent (and `released`, still new)
    assert parent in {g.id for g in got} and now_child not in {g.id for g in got}
    assert parent in await queue.complete_batch(conn, OWNER, [(g.id, g.attempt) for g in got])
    assert (await job(conn, now_child))["status"] == "new"
    assert (await job(conn, later_child))["status"] == "scheduled"

    logged = await rows(conn, "SELECT old_status::text AS a, new_status::text AS b "
                              "FROM test_transitions")
    seen = {(JobStatus(r["a"]), JobStatus(r["b"])) for r in logged}
    assert seen <= TRANSITIONS, seen - TRANSITIONS
    assert seen == TRANSITIONS, TRANSITIONS - seen


# --- raw updates: the database refuses what the state machine does not allow ---------------

_TARGET_SET = {
    # Every column the CHECK constraints tie to a status is made consistent with the target,
    # so only the transition rule can refuse the move.
    JobStatus.SCHEDULED: "status = 'scheduled', lease_owner = NULL, lease_expires_at = NULL, "
                         "finished_at = NULL, started_at = NULL",
    JobStatus.BLOCKED: "status = 'blocked', lease_owner = NULL, lease_expires_at = NULL, "
                       "finished_at = NULL, started_at = NULL",
    JobStatus.NEW: "status = 'new', lease_owner = NULL, lease_expires_at = NULL, "
                   "finished_at = NULL, started_at = NULL",
    JobStatus.PROCESSING: "status = 'processing', lease_owner = 'raw', "
                          "lease_expires_at = now() + interval '1 minute', finished_at = NULL, "
                          "started_at = coalesce(started_at, now()), "
                          "attempts = greatest(attempts, 1)",
    JobStatus.SUCCESS: "status = 'success', lease_owner = NULL, lease_expires_at = NULL, "
                       "finished_at = now(), attempts = greatest(attempts, 1)",
    JobStatus.FAILED: "status = 'failed', lease_owner = NULL, lease_expires_at = NULL, "
                      "finished_at = now()",
    JobStatus.CANCELLED: "status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, "
                         "finished_at = now()",
}


async def _job_in(conn, status: JobStatus) -> int:
    """A job brought into `status` by the queue functions."""
    if status is JobStatus.SCHEDULED:
        return await add_job(conn, name=f"in-{status}", max_attempts=1, delay=3600)
    if status is JobStatus.BLOCKED:
        parent = await add_job(conn, name="parent", max_attempts=1)
        return await add_job(conn, name=f"in-{status}", max_attempts=1, depends_on=[parent])
    job_id = await add_job(conn, name=f"in-{status}", max_attempts=1)
    if status is JobStatus.NEW:
        return job_id
    if status is JobStatus.CANCELLED:
        await queue.cancel(conn, job_id)
        return job_id
    c = await claim_one(conn)
    if status is JobStatus.SUCCESS:
        await queue.complete_batch(conn, OWNER, [(c.id, c.attempt)])
    elif status is JobStatus.FAILED:
        await _fail(conn, c)
    assert (await job(conn, job_id))["status"] == status
    return job_id


async def _raw_move(conn, job_id: int, target: JobStatus) -> None:
    await conn.execute(f"UPDATE jobs SET {_TARGET_SET[target]} WHERE id = %s", (job_id,))


ILLEGAL = sorted(
    (a, b) for a in JobStatus for b in JobStatus if a != b and (a, b) not in TRANSITIONS
)


@pytest.mark.parametrize(("source", "target"), ILLEGAL, ids=[f"{a}->{b}" for a, b in ILLEGAL])
async def test_illegal_transition_is_refused_by_the_database(conn, source, target) -> None:
    job_id = await _job_in(conn, source)
    before = await job(conn, job_id)
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        await _raw_move(conn, job_id, target)
    assert refused.value.diag.constraint_name == "jobs_legal_transition"
    assert await job(conn, job_id) == before


LEGAL = sorted(TRANSITIONS)


@pytest.mark.parametrize(("source", "target"), LEGAL, ids=[f"{a}->{b}" for a, b in LEGAL])
async def test_the_same_raw_update_passes_for_allowed_transitions(conn, source, target) -> None:
    """Control for the test above: the raw rows are otherwise valid, so there only the
    transition rule refused them."""
    job_id = await _job_in(conn, source)
    await _raw_move(conn, job_id, target)
    assert (await job(conn, job_id))["status"] == target


@pytest.mark.parametrize("status", sorted(TERMINAL))
async def test_terminal_rows_never_change(conn, status) -> None:
    job_id = await _job_in(conn, status)
    before = await job(conn, job_id)
    for sql in (
        "UPDATE jobs SET name = 'renamed' WHERE id = %s",
        "UPDATE jobs SET priority = 9, updated_at = now() WHERE id = %s",
        "UPDATE jobs SET payload = '{\"x\": 1}' WHERE id = %s",
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            await conn.execute(sql, (job_id,))
    # The queue functions leave it alone too: fenced writes match nothing.
    key = [(job_id, before["attempts"])]
    # (A success already credited to this owner's attempt is reported back as committed.)
    expected_done = {job_id} if status == JobStatus.SUCCESS else set()
    assert await queue.complete_batch(conn, OWNER, key) == expected_done
    # (Likewise a failure already recorded as this owner's attempt outcome.)
    expected_failed = {job_id: "failed"} if status == JobStatus.FAILED else {}
    assert await queue.fail_batch(
        conn, OWNER, [Outcome(job_id, before["attempts"], AttemptOutcome.ERROR, "x")], 0, 0
    ) == expected_failed
    assert await queue.heartbeat(conn, OWNER, key, 30) == set()
    assert await queue.release_batch(conn, OWNER, key) == set()
    assert await queue.reap_expired(conn) == {}
    with pytest.raises(InvalidTransition):
        await queue.cancel(conn, job_id)
    if status != JobStatus.FAILED:
        with pytest.raises(InvalidTransition):
            await queue.retry(conn, job_id)
    assert await job(conn, job_id) == before


async def test_raw_update_of_a_success_row_raises_check_violation(conn) -> None:
    job_id = await _job_in(conn, JobStatus.SUCCESS)
    with pytest.raises(psycopg.errors.CheckViolation):
        await conn.execute("UPDATE jobs SET status = 'new' WHERE id = %s", (job_id,))


@pytest.mark.parametrize(
    ("sql", "constraint"),
    [
        ("INSERT INTO jobs (name, status) VALUES ('x', 'processing')", "jobs_lease_iff_processing"),
        ("INSERT INTO jobs (name, lease_owner, lease_expires_at) VALUES ('x', 'me', now())",
         "jobs_lease_iff_processing"),
        ("INSERT INTO jobs (name, status, lease_owner, lease_expires_at) "
         "VALUES ('x', 'processing', 'me', now())", "jobs_processing_claimed"),
        ("INSERT INTO jobs (name, status, finished_at) VALUES ('x', 'success', now())",
         "jobs_success_claimed"),
        ("INSERT INTO jobs (name, status) VALUES ('x', 'failed')", "jobs_finished_iff_terminal"),
        ("INSERT INTO jobs (name, finished_at) VALUES ('x', now())", "jobs_finished_iff_terminal"),
        ("INSERT INTO jobs (name, priority) VALUES ('x', 10)", "jobs_priority_range"),
        ("INSERT INTO jobs (name, priority) VALUES ('x', -1)", "jobs_priority_range"),
        ("INSERT INTO jobs (name, attempts, max_attempts) VALUES ('x', 3, 2)",
         "jobs_attempts_bounded"),
        ("INSERT INTO jobs (name, max_attempts) VALUES ('x', 0)", "jobs_max_attempts_range"),
        ("INSERT INTO jobs (name) VALUES ('')", "jobs_name_valid"),
        ("INSERT INTO jobs (name, timeout_s) VALUES ('x', 0)", "jobs_timeout_positive"),
        ("INSERT INTO jobs (name, dedupe_key) VALUES ('x', '')", "jobs_dedupe_key_valid"),
    ],
)
async def test_check_constraints_refuse_inconsistent_rows(conn, sql, constraint) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        await conn.execute(sql)
    assert refused.value.diag.constraint_name == constraint
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 0


async def test_retry_of_failed_job_gives_one_more_attempt(conn) -> None:
    job_id = await add_job(conn, max_attempts=2)
    for expected in ("new", "failed"):
        c = await claim_one(conn)
        assert await _fail(conn, c) == {job_id: expected}
    failed = await job(conn, job_id)
    assert (failed["attempts"], failed["max_attempts"]) == (2, 2)
    assert failed["finished_at"] is not None

    retried = await queue.retry(conn, job_id)
    assert retried["status"] == "new"
    assert retried["max_attempts"] == failed["attempts"] + 1 == 3
    assert retried["finished_at"] is None
    c = await claim_one(conn)
    assert c.attempt == 3
    assert await _fail(conn, c) == {job_id: "failed"}
    assert [a["attempt"] for a in await attempts(conn, job_id)] == [1, 2, 3]
    with pytest.raises(psycopg.errors.CheckViolation):  # never more attempts than max
        await conn.execute("UPDATE jobs SET status = 'new', finished_at = NULL, "
                           "attempts = 4 WHERE id = %s", (job_id,))


async def test_cancel_new_and_processing(conn) -> None:
    waiting = await add_job(conn, name="waiting")
    row = await queue.cancel(conn, waiting)
    assert row["status"] == "cancelled" and row["finished_at"] is not None
    assert await attempts(conn, waiting) == []

    # Waiting for a retry: its ended attempt keeps its row, and no attempt is invented.
    retrying = await add_job(conn, name="retrying", max_attempts=3)
    assert await _fail(conn, await claim_one(conn)) == {retrying: "new"}
    assert (await queue.cancel(conn, retrying))["status"] == "cancelled"
    assert [(a["attempt"], a["outcome"]) for a in await attempts(conn, retrying)] == [
        (1, "error")]

    running = await add_job(conn, name="running")
    c = await claim_one(conn)
    row = await queue.cancel(conn, running)
    assert row["status"] == "cancelled" and row["lease_owner"] is None
    (attempt,) = await attempts(conn, running)
    assert (attempt["attempt"], attempt["owner"]) == (c.attempt, OWNER)
    assert attempt["outcome"] == "cancelled" and attempt["finished_at"] is not None
    # The former owner's completion is fenced out by status.
    assert await queue.complete_batch(conn, OWNER, [(c.id, c.attempt)]) == set()
    assert await queue.heartbeat(conn, OWNER, [(c.id, c.attempt)], 30) == set()
    assert (await job(conn, running))["status"] == "cancelled"


@pytest.mark.parametrize("status", [JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED])
async def test_cancel_from_wrong_state_raises(conn, status) -> None:
    job_id = await _job_in(conn, status)
    with pytest.raises(InvalidTransition) as refused:
        await queue.cancel(conn, job_id)
    assert refused.value.status == status and refused.value.action == "cancel"


@pytest.mark.parametrize(
    "status", [JobStatus.NEW, JobStatus.PROCESSING, JobStatus.SUCCESS, JobStatus.CANCELLED]
)
async def test_retry_from_wrong_state_raises(conn, status) -> None:
    job_id = await _job_in(conn, status)
    with pytest.raises(InvalidTransition) as refused:
        await queue.retry(conn, job_id)
    assert refused.value.status == status and refused.value.action == "retry"


async def test_cancel_and_retry_of_missing_job_raise_not_found(conn) -> None:
    with pytest.raises(JobNotFound):
        await queue.cancel(conn, 424242)
    with pytest.raises(JobNotFound):
        await queue.retry(conn, 424242)


# --- job_attempts: written when the attempt ends, by every path ------------------------------

async def _end_by(conn, path: str, c) -> None:
    if path == "success":
        assert await queue.complete_batch(conn, OWNER, [(c.id, c.attempt)]) == {c.id}
    elif path == "error":
        assert await _fail(conn, c) == {c.id: "new"}
    elif path == "timeout":
        assert await _fail(conn, c, outcome=AttemptOutcome.TIMEOUT) == {c.id: "new"}
    elif path == "cancelled":
        await queue.cancel(conn, c.id)
    elif path == "lost":
        await expire_leases(conn, [c.id])
        assert await queue.reap_expired(conn) == {c.id: "new"}
    elif path == "released":
        assert await queue.release_batch(conn, OWNER, [(c.id, c.attempt)]) == {c.id}


@pytest.mark.parametrize(
    ("path", "outcome", "error"),
    [
        ("success", "success", None),
        ("error", "error", "boom"),
        ("timeout", "timeout", "boom"),
        ("cancelled", "cancelled", "cancelled"),
        ("lost", "lost", "lease expired"),
        ("released", "lost", "released at worker shutdown"),
    ],
)
async def test_attempt_row_written_when_every_path_ends_the_attempt(
    conn, path, outcome, error
) -> None:
    job_id = await add_job(conn, max_attempts=3)
    c = await claim_one(conn)
    started_at = (await job(conn, job_id))["started_at"]
    # While it runs there is no row: the attempt history shows it from the jobs row.
    assert await scalar(conn, "SELECT count(*) FROM job_attempts") == 0
    (running,) = await attempts(conn, job_id)
    assert (running["attempt"], running["owner"], running["claimed_at"]) == (1, OWNER, started_at)
    assert (running["finished_at"], running["outcome"], running["error"]) == (None, None, None)
    await _end_by(conn, path, c)
    stored = await rows(conn, "SELECT job_id, attempt, owner, claimed_at, finished_at, "
                              "outcome::text AS outcome, error FROM job_attempts")
    assert len(stored) == 1
    (ended,) = await attempts(conn, job_id)
    assert ended == stored[0]
    assert (ended["attempt"], ended["owner"], ended["claimed_at"]) == (1, OWNER, started_at)
    assert ended["finished_at"] is not None and ended["finished_at"] >= ended["claimed_at"]
    assert ended["outcome"] == outcome
    assert ended["error"] == error


async def test_an_attempt_row_is_never_open_and_never_written_twice(conn) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation):
        await conn.execute("INSERT INTO job_attempts (job_id, attempt, owner) VALUES (1, 1, 'x')")
    await conn.execute("INSERT INTO job_attempts (job_id, attempt, owner, finished_at, outcome) "
                       "VALUES (1, 1, 'x', now(), 'success')")
    # An attempt ended twice is a bug: the primary key refuses it loudly.
    with pytest.raises(psycopg.errors.UniqueViolation):
        await conn.execute("INSERT INTO job_attempts (job_id, attempt, owner, finished_at, "
                           "outcome) VALUES (1, 1, 'y', now(), 'lost')")


async def test_attempts_are_numbered_one_per_claim(conn) -> None:
    job_id = await add_job(conn, max_attempts=4)
    for path in ("error", "lost", "released"):
        await _end_by(conn, path, await claim_one(conn))
    c = await claim_one(conn)
    await _end_by(conn, "success", c)
    found = await attempts(conn, job_id)
    assert [a["attempt"] for a in found] == [1, 2, 3, 4]
    assert [a["outcome"] for a in found] == ["error", "lost", "lost", "success"]
    row = await job(conn, job_id)
    assert (row["status"], row["attempts"]) == ("success", 4)
    for earlier, later in itertools.pairwise(found):
        assert earlier["finished_at"] <= later["claimed_at"]


# --- retries, backoff and dead letters --------------------------------------------------------

@pytest.mark.parametrize("times", [0, 1, 3])
async def test_fail_kind_fails_while_attempt_at_most_times(times) -> None:
    handler = default_registry.get("fail")
    assert handler is not None
    for attempt in range(1, times + 3):
        context = JobContext(1, attempt, "fail", {"times": times}, OWNER)
        if attempt <= times:
            with pytest.raises(RuntimeError):
                await handler.run(context)
        else:
            await handler.run(context)


async def test_failing_jobs_retry_then_succeed_or_dead_letter(db_url, conn) -> None:
    recovers = await add_job(conn, name="recovers", kind="fail", payload={"times": 2},
                             max_attempts=5)
    dead = await add_job(conn, name="dead", kind="fail", payload={"times": 10}, max_attempts=3)
    permanent = await add_job(conn, name="unknown-kind", max_attempts=5)
    await conn.execute("UPDATE jobs SET kind = 'no-such-kind' WHERE id = %s", (permanent,))
    worker = Worker(fast_settings(), db_url)
    await worker.start()
    try:
        async def finished():
            n = await scalar(conn, "SELECT count(*) FROM jobs WHERE status IN "
                                   "('success', 'failed')")
            return n == 3

        await wait_until(finished, 20, what="all three jobs finished")
    finally:
        await worker.stop()

    row = await job(conn, recovers)
    assert (row["status"], row["attempts"]) == ("success", 3)
    assert [a["outcome"] for a in await attempts(conn, recovers)] == ["error", "error", "success"]

    row = await job(conn, dead)
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("failed", 3, 3)
    assert "attempt 3" in row["last_error"]
    assert [a["outcome"] for a in await attempts(conn, dead)] == ["error"] * 3

    row = await job(conn, permanent)  # no handler: dead-lettered at once, not retried
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "no handler" in row["last_error"]


async def test_handler_past_its_timeout_is_a_timeout_attempt(db_url, conn) -> None:
    job_id = await add_job(conn, kind="sleep", payload={"ms": 10_000}, timeout=0.2,
                           max_attempts=2)
    quick = await add_job(conn, name="quick", kind="sleep", payload={"ms": 10}, timeout=5)
    worker = Worker(fast_settings(), db_url)
    await worker.start()
    try:
        async def settled():
            return (await job(conn, job_id))["status"] == "failed" and (
                await job(conn, quick))["status"] == "success"

        await wait_until(settled, 10, what="timed-out job dead-lettered")
    finally:
        await worker.stop()
    found = await attempts(conn, job_id)
    assert [(a["outcome"], a["error"]) for a in found] == [("timeout", "timed out after 0.2s")] * 2
    assert all(a["finished_at"] is not None for a in found)


async def test_backoff_run_at_lies_in_the_jittered_window(conn) -> None:
    base, cap, max_attempts = 10.0, 100.0, 8
    ids = await add_jobs(conn, 6, max_attempts=max_attempts)
    delays: dict[int, list[float]] = {}
    for attempt in range(1, max_attempts):
        await conn.execute("UPDATE jobs SET run_at = now() WHERE status = 'scheduled'")
        await queue.stage_due(conn)
        claimed = await claim(conn, OWNER, len(ids))
        assert {c.attempt for c in claimed} == {attempt} and len(claimed) == len(ids)
        outcomes = [Outcome(c.id, c.attempt, AttemptOutcome.ERROR, "x") for c in claimed]
        assert set((await queue.fail_batch(conn, OWNER, outcomes, base, cap)).values()) == {
            "scheduled"}
        found = await rows(conn, "SELECT extract(epoch FROM run_at - updated_at)::float8 AS d "
                                 "FROM jobs")
        delays[attempt] = [r["d"] for r in found]
    for attempt, values in delays.items():
        ceiling = min(cap, base * 2 ** (attempt - 1))
        for delay in values:
            assert ceiling * 0.5 - 1e-6 <= delay <= ceiling + 1e-6, (attempt, delay, ceiling)
    everything = [d / min(cap, base * 2 ** (a - 1)) for a, v in delays.items() for d in v]
    assert max(everything) - min(everything) > 0.05, "no jitter in the backoff"


async def test_plain_insert_is_a_runnable_job(db_url, conn) -> None:
    await conn.execute("INSERT INTO jobs (name, kind, payload) VALUES ('plain', 'noop', '{}')")
    row = (await rows(conn, "SELECT * FROM jobs"))[0]
    assert (row["status"], row["attempts"], row["max_attempts"], row["priority"]) == (
        "new", 0, 5, 0)
    assert row["run_at"] is not None and row["created_at"] is not None
    worker = Worker(fast_settings(), db_url)
    await worker.start()
    try:
        async def done():
            return (await job(conn, row["id"]))["status"] == "success"

        await wait_until(done, 10, what="plain job done")
    finally:
        await worker.stop()
    (attempt,) = await attempts(conn, row["id"])
    assert attempt["outcome"] == "success"


async def test_delay_and_priority_survive_the_round_trip(conn) -> None:
    job_id = await add_job(conn, priority=7, delay=60)
    row = await job(conn, job_id)
    assert row["priority"] == 7
    assert row["run_at"] - row["created_at"] >= timedelta(seconds=59)
    assert await queue.claim(conn, OWNER, 10, 30) == []
