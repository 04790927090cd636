"""Claim floors (core/floors.py): while a snapshot holds the xmin horizon, a claim starts
each priority's walk of the claim index at a floor, so what claims took since the horizon
stopped costs it nothing; a job that becomes runnable below a floor is taken by the next
walk from the head (every rescan interval), never lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from boundq.core import queue
from boundq.core.floors import NO_FLOORS, ClaimFloors, FloorSettings
from boundq.core.handlers import Registry, register_builtins
from boundq.core.housekeeping import HELD_QUEUES_EVERY_S, Scout
from boundq.core.lanes import Lane
from boundq.core.loops import LoopSettings
from boundq.core.maintenance import Reaper
from boundq.core.metrics import Metrics
from boundq.core.planner import QueuePlanner
from boundq.core.queue import ClaimedRow
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import plan_nodes, rows, scalar, wait_until

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = "floor-test"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def row(job_id: int, priority: int, run_at_s: float, *, queue_name: str = "default",
        aged: bool = False, claimed_s: float = 100.0) -> ClaimedRow:
    return ClaimedRow(job_id, 1, "noop", queue_name, None, None,
                      T0 + timedelta(seconds=run_at_s), T0, 0.0,
                      T0 + timedelta(seconds=claimed_s), None, priority, aged)


def floors_of(floors: ClaimFloors, queue_name: str = "default") -> dict[int, float]:
    scan = floors.scan([queue_name])
    return {p: (at - T0).total_seconds()
            for q, p, at in zip(scan.queues, scan.priorities, scan.ats, strict=True)
            if q == queue_name}


def held_floors(margin_s: float = 1.0) -> tuple[ClaimFloors, Clock]:
    clock = Clock()
    floors = ClaimFloors(FloorSettings(pin_s=5.0, margin_s=margin_s, rescan_s=10.0), clock)
    floors.horizon(6.0)
    walk = floors.scan(["default"])
    assert walk.full and walk is not NO_FLOORS  # the first claim walks from the head
    floors.ended(walk)
    return floors, clock


def test_no_floors_while_no_snapshot_holds_the_horizon() -> None:
    floors = ClaimFloors(FloorSettings(pin_s=5.0))
    floors.horizon(4.9)
    floors.observe({"default": 2}, [row(1, 0, 50.0)], capped=False)
    assert floors.scan(["default"]) is NO_FLOORS
    assert floors.full_scans == floors.floored_scans == 0


def test_a_walk_that_stops_inside_a_priority_floors_it_at_its_last_row() -> None:
    floors, _ = held_floors()
    taken = [row(1, 5, 40.0), row(2, 5, 42.0), row(3, 5, 41.5)]
    floors.observe({"default": 3}, taken, capped=False)
    # priorities above 5 ran out (the walk went past them): floored at the claim's time;
    # 5 at its last row taken; below 5 nothing is known
    assert floors_of(floors) == {5: 41.0, 6: 99.0, 7: 99.0, 8: 99.0, 9: 99.0}


def test_a_walk_that_ran_out_floors_every_priority_at_the_claims_time() -> None:
    floors, _ = held_floors()
    floors.observe({"default": 10}, [row(1, 3, 40.0)], capped=False)
    assert floors_of(floors) == dict.fromkeys(range(10), 99.0)


def test_a_claim_stopped_by_its_permits_did_not_run_out() -> None:
    floors, _ = held_floors()
    floors.observe({"default": 10}, [row(1, 3, 40.0)], capped=True)
    assert floors_of(floors) == {3: 39.0, 4: 99.0, 5: 99.0, 6: 99.0, 7: 99.0, 8: 99.0, 9: 99.0}


def test_the_aging_lane_says_nothing_about_where_the_walk_stopped() -> None:
    floors, _ = held_floors()
    taken = [row(1, 0, 10.0, aged=True), row(2, 6, 50.0), row(3, 6, 51.0)]
    floors.observe({"default": 3}, taken, capped=False)
    assert floors_of(floors) == {6: 50.0, 7: 99.0, 8: 99.0, 9: 99.0}


def test_floors_only_rise_and_stay_with_their_queue() -> None:
    floors, _ = held_floors()
    floors.observe({"default": 1, "mail": 1}, [row(1, 0, 60.0), row(2, 0, 70.0, queue_name="mail")],
                   capped=False)
    floors.observe({"default": 1}, [row(3, 0, 20.0)], capped=False)  # a straggler, taken
    assert floors_of(floors)[0] == 59.0
    assert floors_of(floors, "mail")[0] == 69.0


def test_a_walk_from_the_head_is_due_a_rescan_interval_after_the_last_one_ended() -> None:
    floors, clock = held_floors()
    floors.observe({"default": 1}, [row(1, 0, 60.0)], capped=False)
    assert not floors.scan(["default"]).full
    clock.now += 9.5  # (steps of halves: exact in binary floating point)
    assert not floors.scan(["default"]).full
    clock.now += 0.5
    walk = floors.scan(["default"])
    assert walk.full
    assert not floors.scan(["default"]).full  # one walk at a time: the others use floors
    clock.now += 0.5
    floors.ended(walk)
    clock.now += 9.5
    assert not floors.scan(["default"]).full
    clock.now += 0.5
    assert floors.scan(["default"]).full
    assert (floors.full_scans, floors.floored_scans) == (3, 4)


def test_a_long_walk_from_the_head_puts_the_next_ten_times_as_far_away() -> None:
    floors, clock = held_floors()
    floors.observe({"default": 1}, [row(1, 0, 60.0)], capped=False)
    clock.now += 10.0
    walk = floors.scan(["default"])
    assert walk.full
    clock.now += 3.0  # the walk took 3 s: the next one no sooner than 30 s after it
    floors.ended(walk)
    floors.ended(floors.scan(["default"]))  # a floored claim ending changes nothing
    clock.now += 29.5
    assert not floors.scan(["default"]).full
    clock.now += 0.5
    assert floors.scan(["default"]).full


def test_floors_stay_on_after_the_snapshot_goes_until_a_walk_from_the_head_is_cheap() -> None:
    floors, clock = held_floors()  # rescan_s 10: a walk of at most 1 s is cheap
    floors.observe({"default": 1}, [row(1, 0, 60.0)], capped=False)
    floors.horizon(0.0)
    assert not floors.held and floors.on
    assert floors_of(floors)[0] == 59.0  # the floors learned under the pin still apply
    clock.now += 10.0
    walk = floors.scan(["default"])
    assert walk.full
    clock.now += 3.0  # marking what the pin kept: slow, so floors stay on
    floors.ended(walk)
    assert floors.on
    clock.now += 30.0  # the next walk, ten times as far away
    walk = floors.scan(["default"])
    assert walk.full
    clock.now += 0.5
    floors.ended(walk)
    assert not floors.on
    assert floors.scan(["default"]) is NO_FLOORS
    floors.observe({"default": 1}, [row(2, 0, 70.0)], capped=False)  # learns nothing now
    floors.horizon(6.0)
    walk = floors.scan(["default"])
    assert walk.full  # held again: a walk from the head first, as at start
    assert floors.scan(["default"]).full  # and, nothing known yet, so is every other
    floors.ended(walk)


def test_after_the_snapshot_goes_cheap_means_as_cheap_as_the_floored_claims() -> None:
    """Marked dead, what the pin kept is still read page by page by every walk from the
    head until vacuum removes it: a walk well under the fixed cap keeps floors on while it
    costs more than twice what the floored claims cost."""
    floors, clock = held_floors()  # rescan_s 10: the fixed cap is 1 s
    floors.observe({"default": 1}, [row(1, 0, 60.0)], capped=False)
    for _ in range(5):  # floored claims of 2 ms each
        scan = floors.scan(["default"])
        assert not scan.full
        clock.now += 0.002
        floors.ended(scan)
    floors.horizon(0.0)
    clock.now += 10.0
    walk = floors.scan(["default"])
    assert walk.full
    clock.now += 0.015  # 15 ms: under the cap, but seven times a floored claim
    floors.ended(walk)
    assert floors.on
    clock.now += 10.0
    walk = floors.scan(["default"])
    assert walk.full
    clock.now += 0.003  # vacuum has passed: under twice a floored claim
    floors.ended(walk)
    assert not floors.on
    assert floors.scan(["default"]) is NO_FLOORS


def test_only_a_walk_begun_after_the_snapshot_went_can_turn_floors_off() -> None:
    floors, clock = held_floors()
    clock.now += 10.0
    walk = floors.scan(["default"])
    assert walk.full
    clock.now += 0.5
    floors.horizon(0.0)  # gone while that walk was in flight
    floors.ended(walk)
    assert floors.on


def test_a_snapshot_held_again_while_settling_keeps_the_floors() -> None:
    floors, _ = held_floors()
    floors.observe({"default": 1}, [row(1, 0, 60.0)], capped=False)
    floors.horizon(0.0)
    floors.horizon(6.0)
    assert floors.on and floors_of(floors)[0] == 59.0


@pytest.mark.parametrize("bad", [dict(pin_s=0), dict(margin_s=-1), dict(rescan_s=0)])
def test_floor_settings_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FloorSettings(**bad)


@pytest.fixture
async def holder(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A session idle in a transaction whose snapshot holds the xmin horizon."""
    async with await psycopg.AsyncConnection.connect(db_url) as connection:
        await connection.execute("SET idle_in_transaction_session_timeout = 0")
        await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await connection.execute("SELECT 1")
        yield connection
        await connection.rollback()


async def _backlog(conn, n: int) -> None:
    """n jobs 1 ms apart in arrival order, all runnable."""
    await conn.execute(
        "INSERT INTO jobs (name, kind, run_at) SELECT 'j' || g, 'noop', "
        "now() - interval '1 hour' + g * interval '1 millisecond' "
        "FROM generate_series(1, %s) AS g", (n,))


async def _claim_and_finish(conn, floors: ClaimFloors, n: int) -> list[ClaimedRow]:
    scan = floors.scan(["default"])
    _, taken = await queue.complete_and_claim(conn, OWNER, (), [("default", n)], 30.0,
                                              floors=scan)
    floors.ended(scan)
    floors.observe({"default": n}, taken, capped=False)
    await queue.complete_and_claim(conn, OWNER, [(r.id, r.attempt) for r in taken], [], 30.0)
    return taken


async def _buffers(conn, scan_params: dict[str, object], n: int) -> int:
    """Buffers the pick of n jobs reads, by EXPLAIN (ANALYZE, BUFFERS) (it claims them)."""
    params = {"owner": OWNER, "ids": [], "attempts": [], "results": "{}", "followups": "{}",
              "queues": ["default"], "limits": [n], "oldest": [0], "total": n, "free": n,
              "lease_s": 30.0, **scan_params}
    cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
                             + queue.Q.job_complete_and_claim, params)
    found = await cur.fetchone()
    assert found is not None
    plan = found[0][0]["Plan"]
    assert sum(node.get("Actual Rows", 0) for node in plan_nodes(plan)
               if node.get("Subplan Name") == "CTE claimed") == n
    picked = [node for node in plan_nodes(plan) if node.get("Subplan Name") == "CTE picked"]
    assert len(picked) == 1
    return int(picked[0]["Shared Hit Blocks"]) + int(picked[0]["Shared Read Blocks"])


async def test_a_floored_claim_skips_what_claims_took_behind_a_held_snapshot(conn, holder) -> None:
    floors = ClaimFloors(FloorSettings(pin_s=1.0, margin_s=0.0, rescan_s=3600.0), Clock())
    floors.horizon(2.0)
    await _backlog(conn, 21_000)
    for _ in range(4):  # 20,000 rows claimed and finished: their old versions stay indexed
        await _claim_and_finish(conn, floors, 5000)
    scan = floors.scan(["default"])
    assert scan.full is False and scan.queues
    from_head = await _buffers(conn, NO_FLOORS.params(), 10)
    from_floor = await _buffers(conn, scan.params(), 10)
    # the walk from the head visits every row taken since the snapshot (a buffer counts
    # once for a run of entries on one page); the floored one descends to ten ranges
    assert from_floor * 5 < from_head, (from_floor, from_head)


async def test_a_job_made_runnable_below_a_floor_waits_for_the_next_walk_from_the_head(
        conn, holder) -> None:
    clock = Clock()
    floors = ClaimFloors(FloorSettings(pin_s=1.0, margin_s=0.0, rescan_s=5.0), clock)
    floors.horizon(2.0)
    await _backlog(conn, 300)
    await _claim_and_finish(conn, floors, 100)
    await _claim_and_finish(conn, floors, 100)
    late = await scalar(conn, "INSERT INTO jobs (name, kind, run_at) "
                              "VALUES ('late', 'noop', now() - interval '2 hours') RETURNING id")
    taken = await _claim_and_finish(conn, floors, 100)  # floored: the late job is below
    assert late not in {r.id for r in taken} and len(taken) == 100
    assert await scalar(conn, "SELECT status::text FROM jobs WHERE id = %s", (late,)) == "new"
    clock.now += 5.0
    taken = await _claim_and_finish(conn, floors, 1)  # the walk from the head
    assert [r.id for r in taken] == [late]
    assert floors.full_scans == 2


async def test_the_scout_reads_how_long_a_snapshot_has_held_the_horizon(db_url, conn,
                                                                        holder) -> None:
    start = await scalar(holder, "SELECT now()")
    before = await scalar(conn, "SELECT now()")
    age = await queue.oldest_snapshot_age(conn)
    after = await scalar(conn, "SELECT now()")
    assert (before - start).total_seconds() <= age <= (after - start).total_seconds()
    floors = ClaimFloors(FloorSettings(pin_s=1e-6))
    lane = Lane(db_url, "test")
    scout = Scout(LoopSettings(1.0), lane, QueuePlanner(), lambda: None, floors)
    try:
        await scout.run_once()
        assert floors.held
        await holder.rollback()
        await scout.run_once()
        assert not floors.held
    finally:
        await lane.close()


async def test_a_worker_drains_behind_a_held_snapshot_and_loses_nothing(db_url, conn,
                                                                        holder) -> None:
    registry = Registry()
    register_builtins(registry)
    await _backlog(conn, 2000)
    worker = Worker(fast_settings(max_concurrent_jobs=50, num_workers=1,
                                  claim_floor_pin_seconds=0.1,
                                  claim_floor_rescan_seconds=0.5), db_url, registry=registry)
    await worker.start()
    try:
        async def floored() -> bool:
            return worker.floors.floored_scans > 0

        await wait_until(floored, 60, what="a floored claim")
        late = await scalar(conn, "INSERT INTO jobs (name, kind, run_at) "
                                  "VALUES ('late', 'noop', now() - interval '2 hours') "
                                  "RETURNING id")

        async def drained() -> bool:
            return await scalar(conn, "SELECT count(*) FROM jobs WHERE status <> 'success'") == 0

        await wait_until(drained, 60, what="every job, the late one too, succeeded")
    finally:
        await worker.stop()
    assert worker.floors.full_scans >= 1
    done = await rows(conn, "SELECT attempts FROM jobs WHERE id = %s", (late,))
    assert done == [{"attempts": 1}]


async def test_while_held_the_scout_looks_for_new_queues_every_ten_seconds(db_url, conn,
                                                                           holder) -> None:
    clock = Clock()
    floors = ClaimFloors(FloorSettings(pin_s=1e-6))
    planner = QueuePlanner()
    lane = Lane(db_url, "test")
    scout = Scout(LoopSettings(1.0), lane, planner, lambda: None, floors, clock=clock)
    try:
        await scout.run_once()  # the first reading finds the snapshot held
        assert floors.held
        await conn.execute("INSERT INTO jobs (name, kind, queue) VALUES ('j', 'noop', 'fresh')")
        clock.now += HELD_QUEUES_EVERY_S - 0.5
        await scout.run_once()
        assert "fresh" not in planner.weights  # the skip scan waits while the snapshot holds
        clock.now += 0.5
        await scout.run_once()
        assert "fresh" in planner.weights
    finally:
        await lane.close()


def test_while_held_the_reaper_runs_every_quarter_lease_or_ten_rounds_apart() -> None:
    floors = ClaimFloors(FloorSettings(pin_s=5.0))
    reaper = Reaper(LoopSettings(0.2, jitter=0.0), Lane("postgresql://unused", "test"),
                    Metrics(), floors=floors, held_interval_s=7.5)
    assert reaper.idle_sleep() == 0.2
    floors.horizon(5.0)
    assert reaper.idle_sleep() == 7.5
    reaper.took_s = 1.0  # a round that took 1 s: the next no sooner than 10 s after it
    assert reaper.idle_sleep() == 10.0
