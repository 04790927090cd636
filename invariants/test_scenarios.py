"""Deterministic scenarios, one per known failure of peer queues (docs/failures.md §2).

Each runs real worker processes against a fresh database, provokes the failure on purpose,
then heals, drains and runs the full history check, and asserts the specific outcome the
failure would have broken.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from boundq.core import queue
from boundq.core.config import load_settings
from boundq.core.faultproxy import Mode
from boundq.core.faults import POINTS
from boundq.core.handlers import default_registry
from boundq.core.validation import validate_job
from invariants.broken_worker import REAP_FETCH, REAP_UPDATE_BY_ID
from invariants.checker import History, owner_pid
from invariants.harness import Harness
from invariants.profile import LEASE_S, PROFILE, WORKER_ENV

pytestmark = pytest.mark.timeout(PROFILE.timeout_s)


def settings() -> Any:
    return load_settings(WORKER_ENV, dotenv=None)


def wait_until(what: str, predicate: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def finish(h: Harness, keep: int = 2) -> History:
    """Heal, drain within the recovery bound (with `keep` healthy workers), stop the
    workers, check everything."""
    h.heal_all()
    assert h.drain(PROFILE.drain_s, keep), f"jobs still unsettled after {PROFILE.drain_s}s"
    h.stop_workers()
    h.check(final=True)
    return h.history()


def statuses(h: Harness) -> dict[int, str]:
    return {i: s for i, s in h.sql("SELECT id, status::text FROM jobs")}


def held_by(h: Harness, pid: int) -> list[int]:
    rows = h.sql("SELECT id, lease_owner FROM jobs WHERE status = 'processing'")
    return [i for i, owner in rows if owner_pid(owner) == pid]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_crash_point(harness: Harness, point: str) -> None:
    """SIGKILL right after the claim, after the handler's effect, after the commit: claimed
    work comes back through the reaper; committed work is never redone."""
    h = harness
    h.enqueue([h.job("effect", {"ms": 30}) for _ in range(12)])
    crashy = h.start_worker(concurrency=4, crash_at=point)
    assert crashy.popen.wait(timeout=30) == -signal.SIGKILL
    history = finish(h)
    mine = [a for a in history.attempts if owner_pid(a.owner) == crashy.pid]
    assert mine, "the crashing worker claimed nothing before it died"
    if point == "after_commit":
        done = [a for a in mine if a.outcome == "success"]
        assert done, "the commit before the crash did not stick"
        assert all(len([b for b in history.attempts if b.job_id == a.job_id]) == 1 for a in done)
    else:
        assert all(a.outcome == "lost" for a in mine)
    assert all(j.status == "success" for j in history.jobs)


def test_zombie_worker_is_fenced(harness: Harness) -> None:
    """SIGSTOP a worker past its lease, let another take its jobs, SIGCONT it: its late
    heartbeat and completion must be fenced, not committed (PgQueuer's unfenced DELETE)."""
    h = harness
    zombie = h.start_worker(concurrency=2)
    h.enqueue([h.job("effect", {"ms": 700}) for _ in range(2)])
    wait_until("the zombie to hold both jobs", lambda: len(held_by(h, zombie.pid)) == 2)
    os.kill(zombie.pid, signal.SIGSTOP)
    h.fault("sigstop", worker=zombie.index)
    rescuer = h.start_worker(concurrency=2)
    wait_until("the rescuer to finish both jobs",
               lambda: set(statuses(h).values()) == {"success"}, timeout_s=LEASE_S * 10)
    os.kill(zombie.pid, signal.SIGCONT)
    time.sleep(LEASE_S)  # the zombie wakes and tries to heartbeat and complete
    history = finish(h)
    assert {owner_pid(a.owner) for a in history.attempts if a.outcome == "success"} \
        == {rescuer.pid}
    assert len(history.effects) == 2
    zombie_reports = [r for r in history.reports if r.attempt == 1]
    assert zombie_reports, "the zombie never noticed it had lost its leases"


def test_event_loop_stall_longer_than_lease(harness: Harness) -> None:
    """A handler blocks the event loop past the lease (no heartbeats, PgQueuer #323):
    another worker re-runs the job; the stalled worker's late completion is fenced."""
    h = harness
    staller = h.start_worker(concurrency=1)
    stall_ms = int(LEASE_S * 3 * 1000)
    (job_id,) = h.enqueue([h.job("effect", {"stall_ms": stall_ms, "stall_attempts": 1})])
    wait_until("the stall to begin", lambda: held_by(h, staller.pid) == [job_id])
    h.start_worker(concurrency=1)
    history = finish(h)
    attempts = sorted((a for a in history.attempts if a.job_id == job_id), key=lambda a: a.attempt)
    assert [a.outcome for a in attempts] == ["lost", "success"]
    assert [(e.job_id, e.attempt) for e in history.effects] == [(job_id, 2)]
    assert any(r.job_id == job_id and r.attempt == 1 for r in history.reports)


def test_reaper_racing_completion(harness: Harness) -> None:
    """River #1302, both interleavings made explicit with two sessions on one expired
    lease: whichever commits first wins and the other changes nothing."""
    h = harness
    owner = "scenario-1-aaaa"

    async def expire(job_id: int) -> int:
        async with await psycopg.AsyncConnection.connect(h.url, autocommit=True) as c:
            rows = await queue.claim(c, owner, 1, 0.05)
        assert [r[0] for r in rows] == [job_id]
        await asyncio.sleep(0.1)  # the lease has expired; nobody reaped it yet
        return job_id

    async def race(job_id: int, reaper_first: bool) -> tuple[set[int], dict[int, str]]:
        await expire(job_id)
        async with await psycopg.AsyncConnection.connect(h.url, autocommit=True) as first, \
                await psycopg.AsyncConnection.connect(h.url, autocommit=True) as second:
            await first.execute("BEGIN")
            if reaper_first:
                reaped = await queue.reap_expired(first)
                done_task = asyncio.ensure_future(queue.complete_batch(second, owner,
                                                                       [(job_id, 1)]))
                await asyncio.sleep(0.2)
                assert not done_task.done(), "the completion must wait for the reaper's lock"
                await first.execute("COMMIT")
                done = await done_task
            else:
                done = await queue.complete_batch(first, owner, [(job_id, 1)])
                reaped = await queue.reap_expired(second)  # SKIP LOCKED: not this row
                await first.execute("COMMIT")
                reaped |= await queue.reap_expired(second)  # and now it is finished
        return done, reaped

    done, reaped = h.run(race(h.enqueue([h.job("effect")])[0], reaper_first=False))
    assert done and not reaped
    done, reaped = h.run(race(h.enqueue([h.job("effect")])[0], reaper_first=True))
    assert not done and set(reaped.values()) == {"new"}

    # The same race against a fetch-then-update reaper: its stale update would move a
    # finished job back to `new`; only the transition trigger stops it in this database.
    async def stale_reap(job_id: int) -> None:
        await expire(job_id)
        async with await psycopg.AsyncConnection.connect(h.url, autocommit=True) as c:
            stale = [r[0] for r in await (await c.execute(REAP_FETCH, {"limit": 10})).fetchall()]
            assert stale == [job_id]
            assert await queue.complete_batch(c, owner, [(job_id, 1)]) == {job_id}
            with pytest.raises(psycopg.errors.CheckViolation, match="illegal job transition"):
                await c.execute(REAP_UPDATE_BY_ID, {"ids": stale})

    h.run(stale_reap(h.enqueue([h.job("effect", priority=9)])[0]))  # ahead of the reaped one
    h.start_worker(concurrency=2)
    history = finish(h)
    assert [j.status for j in history.jobs] == ["success"] * 3
    assert sorted((e.job_id, e.attempt) for e in history.effects) == [(1, 1), (2, 2), (3, 1)]


def test_poison_job_is_dead_lettered(harness: Harness) -> None:
    """A job that kills its worker every time ends in `failed` after max_attempts (each
    death counted by the reaper as a lost attempt); the other jobs are unaffected."""
    h = harness
    (poison,) = h.enqueue([h.job("poison", max_attempts=3)])
    others = h.enqueue([h.job("effect", {"ms": 20}, max_attempts=10) for _ in range(20)])
    history = finish(h)  # drain keeps restarting the workers the poison job kills
    by_id = {j.id: j for j in history.jobs}
    assert (by_id[poison].status, by_id[poison].attempts) == ("failed", 3)
    assert [a.outcome for a in history.attempts if a.job_id == poison] == ["lost"] * 3
    assert all(by_id[i].status == "success" for i in others)
    assert sum(1 for w in h.workers if w.popen.returncode == -signal.SIGKILL) >= 3


def _pickup_s(h: Harness) -> float:
    (job_id,) = h.enqueue([h.job("noop")])
    wait_until("the job to run", lambda: statuses(h).get(job_id) == "success", timeout_s=15)
    rows = h.sql("SELECT extract(epoch FROM started_at - created_at)::float8 FROM jobs "
                 "WHERE id = %s", (job_id,))
    return float(rows[0][0])


def _listening(h: Harness) -> bool:
    rows = h.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND application_name = 'boundq-listener'")
    return int(rows[0][0]) > 0


def test_listen_connection_killed(harness: Harness) -> None:
    """Kill the LISTEN session and keep it from coming back: jobs are still picked up by
    polling. Let it back: it LISTENs again and wake-ups are immediate again (pg-boss #850,
    graphile-worker #541)."""
    h = harness
    poll_s = 2.0
    w = h.start_worker(concurrency=2, POLL_INTERVAL_SECONDS=str(poll_s))
    wait_until("the listener", lambda: _listening(h))
    time.sleep(0.3)
    assert min(_pickup_s(h) for _ in range(3)) < poll_s / 4, "NOTIFY does not wake the worker"

    h.ctx.proxies.reject(w.proxy, frozenset({"boundq-listener"}))
    assert h.terminate("listener") >= 1
    wait_until("the listener to be gone", lambda: not _listening(h))
    slow = [_pickup_s(h) for _ in range(3)]  # polling only
    assert not _listening(h)
    assert max(slow) < poll_s * 1.3 + 1.0

    h.ctx.proxies.reject(w.proxy, frozenset())
    wait_until("the listener to come back", lambda: _listening(h), timeout_s=15)
    time.sleep(0.3)
    assert min(_pickup_s(h) for _ in range(3)) < poll_s / 4, "LISTEN was not restored"
    finish(h)


def test_postgres_restart_under_load(harness: Harness) -> None:
    """`pg_ctl stop -m immediate` and start, twice, while workers are busy: acknowledged
    jobs survive, workers reconnect instead of exiting, every job settles exactly once."""
    h = harness
    workers = [h.start_worker(concurrency=4) for _ in range(3)]
    for w in workers:  # a worker still starting exits when PostgreSQL is down (see README)
        h.wait_ready(w)
    kinds: list[dict[str, Any]] = []
    for i in range(PROFILE.scenario_jobs):
        kind = ("effect", "sleep", "fail")[i % 3]
        payload = {"times": 1} if kind == "fail" else {"ms": i % 50}
        kinds.append(h.job(kind, payload))
    h.enqueue(kinds)
    for down_s in (0.5, 1.0):
        time.sleep(0.7)
        h.pg_restart(down_s)
    history = finish(h)
    assert all(w.popen.returncode in (0, -signal.SIGTERM) for w in workers), \
        "a worker exited during the outage instead of reconnecting"
    assert len(history.jobs) == PROFILE.scenario_jobs


def test_pool_exhaustion_does_not_deadlock(harness: Harness) -> None:
    """Far more permits and loops than connections (MAX_DB_CONNECTIONS=3: a pool of two
    plus the listener): everything still drains, and no more connections are opened."""
    h = harness
    w = h.start_worker(concurrency=20, NUM_WORKERS="4", MAX_DB_CONNECTIONS="3")
    h.enqueue([h.job("effect", {"ms": 5 + i % 25}) for i in range(PROFILE.scenario_jobs)])
    history = finish(h, keep=1)  # this worker alone
    assert [p.pid for p in history.processes] == [w.pid]
    assert all(j.status == "success" for j in history.jobs)
    assert 2 <= history.processes[0].connections_high_water <= 3


def test_partition_does_not_leak_connections(harness: Harness) -> None:
    """A network partition that heals (MemMachine PR #1552's black hole, then recovery):
    the worker's reconnect attempts time out while the network holds their packets. Every
    attempt it abandons must be closed, or the held startup reaches PostgreSQL when the
    network heals and the worker ends up with more sessions than MAX_DB_CONNECTIONS
    (bounded_concurrency). Found by the fault machine; psycopg 3.3 leaves a timed-out
    connection attempt's socket open until garbage collection."""
    h = harness
    w = h.start_worker(concurrency=4)  # MAX_DB_CONNECTIONS by formula: 2 + 4 + 1 = 7
    h.wait_ready(w)
    h.enqueue([h.job("effect", {"ms": 300}) for _ in range(30)])
    time.sleep(0.3)
    h.partition(w, Mode.RESET)  # every connection breaks: pool and listener reconnect...
    time.sleep(0.3)
    h.partition(w, Mode.BLACKHOLE)  # ...into a network that holds their packets
    time.sleep(8)  # several connect_timeout=3 attempts of pool and listener
    h.heal(w, "resume")
    time.sleep(2)
    sessions = h.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                     "AND application_name IN ('boundq-worker', 'boundq-listener')")[0][0]
    assert sessions <= w.db_connections, (
        f"PostgreSQL sees {sessions} sessions of a worker allowed {w.db_connections}")
    finish(h, keep=1)


def test_bulk_create_when_dedupe_holder_finishes(harness: Harness) -> None:
    """A bulk create whose dedupe_key is held by a live job that finishes between the
    INSERT ... ON CONFLICT DO NOTHING and the look-up of the holder (READ COMMITTED: a new
    snapshot per statement). Found by the fault machine: the create must still answer with
    a job id (queue.enqueue retries for this race), not fail inside boundq."""
    h = harness
    (holder,) = h.enqueue([h.job("noop", dedupe_key="k")])
    owner = "scenario-1-aaaa"

    raced = []

    class FinishHolderMidway(psycopg.AsyncConnection[Any]):
        async def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
            cur = await super().execute(query, params, **kw)
            if "ON CONFLICT" in str(query) and not raced:  # holder finishes after the INSERT
                raced.append(True)
                async with await psycopg.AsyncConnection.connect(h.url, autocommit=True) as c:
                    assert await queue.claim(c, owner, 1, 30)
                    assert await queue.complete_batch(c, owner, [(holder, 1)]) == {holder}
            return cur

    specs = [validate_job(h.job("noop", dedupe_key="k"), default_registry, settings())
             for _ in range(2)]

    async def create() -> list[int]:
        async with await FinishHolderMidway.connect(h.url, autocommit=True) as conn:
            return await queue.enqueue_many(conn, specs)

    ids = h.run(create())
    assert raced, "the holder was not finished between the statements"
    assert len(ids) == 2 and ids[0] == ids[1] and ids[0] != holder
    assert statuses(h)[ids[0]] in ("new", "success")


def test_a_claim_whose_answer_was_lost_never_raises_the_bound(harness: Harness) -> None:
    """The soak run's bounded_concurrency break (a history kept from a real run): a claim
    committed, its answer was lost, and the network stayed silent past the lease; the
    worker must not hand that claim's permits to new claims while the claimed row is still
    `processing` under its name. It reconciles first: the rows the database says it holds
    are adopted and run, so it never holds more than MAX_CONCURRENT_JOBS."""
    h = harness
    h.enqueue([h.job("effect", {"ms": 300}) for _ in range(8)])
    lossy = h.start_worker(concurrency=2, BOUNDQ_LOSE_ANSWER="claim",
                           BOUNDQ_LOSE_ANSWER_HOLD_S=str(LEASE_S * 2))
    wait_until("the worker to reconcile the lost answer",
               lambda: "reconciled" in lossy.log_path.read_text(errors="replace"),
               timeout_s=30)
    history = finish(h, keep=1)  # the full check: bounded_concurrency above all
    log = lossy.log_path.read_text(errors="replace")
    assert "claims adopted" in log, log[-2000:]
    mine = [a for a in history.attempts if owner_pid(a.owner) == lossy.pid]
    assert any(a.outcome == "success" for a in mine), "the lossy worker ran nothing"


def _fire_waiting_on_lock(h: Harness) -> list[int]:
    """Worker backends whose statement waits for a lock (a fire blocked on the schedule)."""
    rows = h.sql("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock' AND query LIKE '%%job_schedule_ticks%%'")
    return [r[0] for r in rows]


def test_cron_one_job_per_tick_through_kills_and_a_restart(harness: Harness) -> None:
    """Cron (one_job_per_tick): schedulers racing for every tick, one SIGKILLed right after
    its tick committed, one whose tick's answer is lost, one SIGKILLed while its fire
    statement is in flight (held on the schedule's row), and PostgreSQL stopped with
    `-m immediate` under it all. Every tick has exactly one job; the ticks missed while
    PostgreSQL was down are made up to catch_up, and the skipped ones are on record."""
    h = harness
    every = h.put_schedule(every_s=1, catch_up=2)
    h.put_schedule(every_s=2, catch_up=1, timezone="Europe/Berlin",
                   job={"kind": "effect", "payload": {"ms": 20}})
    crashy = h.start_worker(concurrency=2, crash_at="after_tick")
    lossy = h.start_worker(concurrency=2, BOUNDQ_LOSE_ANSWER="tick")
    racers = [h.start_worker(concurrency=2) for _ in range(2)]
    assert crashy.popen.wait(timeout=30) == -signal.SIGKILL  # died right after a tick
    wait_until("the lost answer to be retried",
               lambda: "injected fault" in lossy.log_path.read_text(errors="replace"))

    # Hold the schedule's row: the next fires wait inside their statement. Kill one racer
    # while its statement waits, then take PostgreSQL down under the others.
    lock = psycopg.connect(h.url, autocommit=True, application_name="boundq-harness")
    try:
        lock.execute("BEGIN")
        lock.execute("SELECT 1 FROM job_schedules WHERE name = %s FOR UPDATE", (every,))
        wait_until("fires to wait on the schedule's row", lambda: len(_fire_waiting_on_lock(h))
                   >= 2)
        h.signal(racers[0], signal.SIGKILL)
        time.sleep(0.3)
        h.pg_restart(down_s=2.5)  # ends the lock holder too: more than catch_up ticks missed
    finally:
        with contextlib.suppress(psycopg.Error):
            lock.close()
    racers.append(h.start_worker(concurrency=2))
    def made_so_far() -> int:
        return len(h.sql("SELECT 1 FROM job_schedule_ticks WHERE schedule = %s", (every,)))

    # At least 4 ticks after the restart, and 6 in all: on a busy machine the ticks before
    # it may be fewer than the schedule's period suggests.
    before = made_so_far()
    wait_until("ticks after the restart", lambda: made_so_far() >= max(before + 4, 6))
    history = finish(h)  # one_job_per_tick, with every other invariant

    made = [t for t in history.ticks if t.schedule == every]
    assert len(made) >= 6, f"only {len(made)} ticks made"
    skipped_fires = [t for t in made if t.window_start < t.tick_at]
    assert skipped_fires, "the outage skipped no tick: catch_up was not exercised"
    scheduled = {j.id for j in history.jobs if j.name.startswith(every + "@")}
    assert scheduled == {t.job_id for t in made}
    assert all(j.status == "success" for j in history.jobs)
