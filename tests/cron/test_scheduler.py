"""The scheduler against real PostgreSQL: a due tick makes its job, catch-up after an
outage, schedulers racing for one tick, a fire cut off mid-statement or answered late,
and PUT/DELETE while a fire is in flight. A watermark set into the past is exactly the
state a schedule is in after an outage (no scheduler advanced it meanwhile)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from boundq.core import schedules
from boundq.core.cron import validate_schedule
from boundq.core.handlers import default_registry
from boundq.core.lanes import Lane
from boundq.core.scheduler import Scheduler, SchedulerSettings
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import rows, scalar, wait_until

Conn = psycopg.AsyncConnection[Any]


async def put(conn: Conn, name: str, cron: str = "* * * * *", *, seconds: bool = False,
              **body: Any) -> None:
    full = {"cron": cron, "timezone": "UTC", "job": {"kind": "noop"}, **body}
    spec = validate_schedule(name, full, default_registry, fast_settings(), seconds=seconds)
    await schedules.put(conn, spec)


async def rewind(conn: Conn, name: str, interval: str) -> datetime:
    """Move a minutely schedule's watermark back to the minute `interval` ago: the ticks
    since then are due, as after an outage that long. Returns the new watermark."""
    at: datetime = await scalar(conn, "UPDATE job_schedules SET first_tick_at = "
                                      "date_trunc('minute', now() - %s::interval), next_tick_at "
                                      "= date_trunc('minute', now() - %s::interval) "
                                      "WHERE name = %s RETURNING next_tick_at",
                                (interval, interval, name))
    return at


def scheduler(url: str, **settings: Any) -> Scheduler:
    return Scheduler(Lane(url, "maintenance"), SchedulerSettings(**settings))


async def fire_again(conn: Conn, s: Scheduler, next_tick: datetime) -> int:
    """`s.run_once()` when nothing is due before `next_tick`: it makes nothing, or that
    tick's one job if its minute began meanwhile (the database's clock, read on each side
    of the call, tells which it may be)."""
    due = "SELECT clock_timestamp() >= %s"
    before = await scalar(conn, due, (next_tick,))
    made = await s.run_once()
    after = await scalar(conn, due, (next_tick,))
    assert made in ({1} if before else {0, 1} if after else {0}), (made, before, after)
    return int(made)


async def jobs_by_tick(conn: Conn) -> dict[str, int]:
    found = await rows(conn, "SELECT name, count(*) AS n FROM jobs GROUP BY name")
    return {r["name"]: r["n"] for r in found}


async def test_a_due_tick_makes_one_job_from_the_template(db_url: str, conn: Conn) -> None:
    await put(conn, "report", job={"kind": "sleep", "payload": {"ms": 1}, "priority": 7,
                                   "queue": "reports", "max_attempts": 2, "timeout": 9})
    tick = await rewind(conn, "report", "0 s")
    s = scheduler(db_url)
    assert await s.run_once() == 1
    (job,) = await rows(conn, "SELECT * FROM jobs")
    assert job["name"] == f"report@{tick:%Y-%m-%dT%H:%M:%SZ}"
    assert (job["kind"], job["payload"], job["priority"], job["queue"], job["max_attempts"],
            job["timeout_s"], job["run_at"], job["status"]) == (
        "sleep", {"ms": 1}, 7, "reports", 2, 9.0, tick, "new")
    (row,) = await rows(conn, "SELECT * FROM job_schedule_ticks")
    assert (row["schedule"], row["tick_at"], row["job_id"], row["window_start"]) == (
        "report", tick, job["id"], tick)
    watermark = await scalar(conn, "SELECT next_tick_at FROM job_schedules")
    assert watermark == tick + timedelta(minutes=1)
    again = await fire_again(conn, s, watermark)
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 1 + again
    assert s._due_in is not None and 0 < s._due_in <= 60
    await s.lane.close()


async def test_delay_runs_the_job_later_than_its_tick(db_url: str, conn: Conn) -> None:
    await put(conn, "later", job={"delay": 3600})
    tick = await rewind(conn, "later", "0 s")
    s = scheduler(db_url)
    assert await s.run_once() == 1
    (job,) = await rows(conn, "SELECT run_at, status::text FROM jobs")
    assert (job["run_at"], job["status"]) == (tick + timedelta(hours=1), "scheduled")
    await s.lane.close()


@pytest.mark.parametrize("catch_up", [1, 3])
async def test_after_an_outage_at_most_catch_up_jobs(db_url: str, conn: Conn,
                                                     catch_up: int) -> None:
    await put(conn, "every5", "*/5 * * * *", catch_up=catch_up)
    await rewind(conn, "every5", "3 hours")
    window = await scalar(conn, "SELECT next_tick_at FROM job_schedules")
    s = scheduler(db_url)
    assert await s.run_once() == catch_up
    made = await rows(conn, "SELECT tick_at, window_start, fired_at FROM job_schedule_ticks "
                            "ORDER BY tick_at")
    latest = [r["tick_at"] for r in made]
    assert all(r["window_start"] == window for r in made)  # the skipped ticks are on record
    assert all(t.minute % 5 == 0 and t <= made[0]["fired_at"] for t in latest)
    assert made[-1]["fired_at"] - latest[-1] < timedelta(minutes=5)  # the latest due tick
    assert [b - a for a, b in itertools.pairwise(latest)] == [
        timedelta(minutes=5)] * (catch_up - 1)
    assert await scalar(conn, "SELECT count(*) FROM jobs") == catch_up
    assert await scalar(conn, "SELECT next_tick_at > now() FROM job_schedules")
    await s.lane.close()


async def test_schedulers_racing_make_one_job_per_tick(db_url: str, conn: Conn) -> None:
    """Four schedulers (as four worker processes run them) on ten schedules with hours of
    missed ticks, all at once, several rounds: every tick has one job."""
    for i in range(10):
        await put(conn, f"s{i}", f"*/{i + 1} * * * *", catch_up=5)
        await rewind(conn, f"s{i}", f"{i + 2} hours")
    racers = [scheduler(db_url) for _ in range(4)]
    minute = "SELECT date_trunc('minute', clock_timestamp())"
    began = await scalar(conn, minute)
    for _ in range(3):
        await asyncio.gather(*(r.run_once() for r in racers))
    turned = await scalar(conn, minute) != began
    made = sum(r.created for r in racers)
    total = await scalar(conn, "SELECT count(*) FROM jobs")
    # Five caught-up ticks each; a minute that turned during the rounds brought one more
    # due tick to the schedules it matches (s0 at least), each with its one job.
    assert made == total and (total == 50 or (turned and 50 < total <= 60)), (made, total)
    assert set((await jobs_by_tick(conn)).values()) == {1}
    assert await scalar(conn, "SELECT count(*) FROM job_schedule_ticks t JOIN jobs j "
                              "ON j.id = t.job_id") == total
    assert sum(r.lost_races for r in racers) > 0, "the schedulers never raced"
    for r in racers:
        await r.lane.close()


async def test_the_second_of_two_concurrent_fires_writes_nothing(db_url: str,
                                                                  conn: Conn) -> None:
    """Both read the same due watermark; the first holds the row while the second waits
    for it, then finds the watermark moved and matches nothing."""
    await put(conn, "race")
    await rewind(conn, "race", "10 minutes")
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as a, \
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as b:
        (due,) = await schedules.due(a, 10)
        fire = schedules.plan(due)
        await a.execute("BEGIN")
        first = await schedules.fire(a, fire, 100)
        second = asyncio.ensure_future(schedules.fire(b, fire, 100))
        await asyncio.sleep(0.3)
        assert not second.done(), "the second fire must wait for the first one's row lock"
        await a.execute("COMMIT")
        lost = await second
    assert first.won and len(first.job_ids) == 1
    assert not lost.won and lost.job_ids == ()
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 1


async def test_a_fire_cut_off_mid_statement_leaves_nothing(db_url: str, conn: Conn) -> None:
    """The fire's backend is terminated while its statement waits (the scheduler killed,
    PostgreSQL restarted): nothing of it stays, and the next scheduler makes the job."""
    await put(conn, "cut")
    await rewind(conn, "cut", "1 minute")
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as blocker, \
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as victim:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT * FROM job_schedules WHERE name = 'cut' FOR UPDATE")
        (due,) = await schedules.due(victim, 10)
        pid = victim.info.backend_pid
        fire = asyncio.ensure_future(schedules.fire(victim, schedules.plan(due), 100))
        await wait_until(lambda: scalar(conn, "SELECT wait_event_type = 'Lock' FROM "
                                              "pg_stat_activity WHERE pid = %s", (pid,)),
                         within=10, what="the fire to wait for the row lock")
        await scalar(conn, "SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            await fire
        await blocker.execute("ROLLBACK")
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 0
    assert await scalar(conn, "SELECT count(*) FROM job_schedule_ticks") == 0
    s = scheduler(db_url)
    assert await s.run_once() == 1
    await s.lane.close()


async def test_a_fire_answered_late_is_not_repeated(db_url: str, conn: Conn) -> None:
    """A fire committed but its answer was lost: the scheduler retries from what it read
    before (the worst case), and the watermark check refuses the repeat."""
    await put(conn, "late")
    await rewind(conn, "late", "0 s")
    (due,) = await schedules.due(conn, 10)
    fire = schedules.plan(due)
    assert (await schedules.fire(conn, fire, 100)).won
    again = await schedules.fire(conn, fire, 100)
    assert not again.won and again.job_ids == ()
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 1


async def test_put_or_delete_while_a_fire_is_in_flight(db_url: str, conn: Conn) -> None:
    """A fire computed from the old schedule creates nothing once a PUT or a DELETE
    committed, even when the expression did not change."""
    await put(conn, "changing")
    await rewind(conn, "changing", "5 minutes")
    (due,) = await schedules.due(conn, 10)
    stale = schedules.plan(due)
    await put(conn, "changing", job={"kind": "noop", "priority": 9})  # same cron: watermark kept
    assert not (await schedules.fire(conn, stale, 100)).won
    s = scheduler(db_url)
    assert await s.run_once() == 1  # the due tick, with the new template
    assert await scalar(conn, "SELECT priority FROM jobs") == 9

    await rewind(conn, "changing", "5 minutes")
    (due,) = await schedules.due(conn, 10)
    stale = schedules.plan(due)
    await put(conn, "changing", "0 0 1 1 *")  # a new expression starts after now
    assert not (await schedules.fire(conn, stale, 100)).won
    assert await scalar(conn, "SELECT next_tick_at > now() FROM job_schedules")

    await rewind(conn, "changing", "5 minutes")
    (due,) = await schedules.due(conn, 10)
    stale = schedules.plan(due)
    assert await schedules.delete(conn, "changing")
    assert not (await schedules.fire(conn, stale, 100)).won
    assert await s.run_once() == 0
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 1
    assert await scalar(conn, "SELECT count(*) FROM job_schedule_ticks") == 0  # cascade
    await s.lane.close()


async def test_tick_rows_stay_within_the_window(db_url: str, conn: Conn) -> None:
    await put(conn, "windowed")
    await conn.execute("INSERT INTO job_schedule_ticks (schedule, tick_at, job_id, window_start) "
                       "SELECT 'windowed', t, 0, t FROM generate_series(now() - interval '1 day', "
                       "now() - interval '23 hours', interval '1 minute') AS t")
    await rewind(conn, "windowed", "0 s")
    s = scheduler(db_url, ticks_kept=3)
    assert await s.run_once() == 1
    kept = await rows(conn, "SELECT job_id FROM job_schedule_ticks ORDER BY tick_at")
    assert [r["job_id"] for r in kept][:3] == [0, 0, 0] and len(kept) == 4  # 3 + the new one
    await s.lane.close()


async def test_a_watermark_moved_back_cannot_make_a_tick_twice(db_url: str,
                                                                conn: Conn) -> None:
    """The tick rows' primary key: a tick on record makes no second job, even when the
    watermark is moved back by hand."""
    await put(conn, "twice")
    tick = await rewind(conn, "twice", "0 s")
    s = scheduler(db_url)
    assert await s.run_once() == 1
    await conn.execute("UPDATE job_schedules SET next_tick_at = %s WHERE name = 'twice'",
                       (tick,))
    again = await fire_again(conn, s, tick + timedelta(minutes=1))
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 1 + again
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE run_at = %s", (tick,)) == 1
    await s.lane.close()


def test_scheduler_settings_are_validated() -> None:
    for bad in ({"interval_s": 0}, {"batch": 0}, {"ticks_kept": 0}, {"deadline_s": 0}):
        with pytest.raises(ValueError):
            SchedulerSettings(**bad)
    assert SchedulerSettings().interval_s == 1.0


async def test_every_worker_runs_the_scheduler(db_url: str, conn: Conn) -> None:
    await put(conn, "heartbeat", "* * * * * *", seconds=True)
    worker = Worker(fast_settings(), db_url)
    await worker.start()
    try:
        await wait_until(lambda: scalar(conn, "SELECT count(*) >= 2 FROM jobs WHERE "
                                              "status = 'success'"),
                         within=30, what="two ticks' jobs to run")
    finally:
        await worker.stop()
    assert set((await jobs_by_tick(conn)).values()) == {1}
