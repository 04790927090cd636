"""The claim statement: at most n rows, claim order, no early start of delayed jobs, and no
job handed to two claimers however many claim at once."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from boundq.core import queue
from tests.helpers import add_jobs, claim, job, rows, scalar, spec, wait_until

OWNER = "claimer"


@pytest.mark.parametrize("n", [1, 3, 7, 50])
async def test_claim_never_returns_more_than_n(conn, n) -> None:
    await add_jobs(conn, 40)
    claimed = await claim(conn, OWNER, n)
    assert len(claimed) == min(n, 40)
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'processing'") == len(
        claimed)
    assert {c.attempt for c in claimed} == {1}
    # The claim writes no attempt row: each running attempt is its jobs row until it ends.
    assert await scalar(conn, "SELECT count(*) FROM job_attempts") == 0


async def test_concurrent_claims_each_stay_within_n(db_url, conn) -> None:
    await add_jobs(conn, 300)
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(4)]
    try:
        for _ in range(10):
            sizes = [3, 5, 7, 11]
            results = await asyncio.gather(
                *(queue.claim(c, f"{OWNER}-{i}", sizes[i], 30) for i, c in enumerate(conns)))
            for size, got in zip(sizes, results, strict=True):
                assert len(got) <= size
    finally:
        for c in conns:
            await c.close()
    per_owner = await rows(conn, "SELECT lease_owner, count(*) AS n FROM jobs "
                                 "WHERE status = 'processing' GROUP BY lease_owner")
    assert sum(r["n"] for r in per_owner) == 10 * (3 + 5 + 7 + 11)


async def test_claim_order_is_priority_then_run_at_then_id(conn) -> None:
    priorities = [0, 9, 5, 9, 0, 5, 1, 9, 0, 3]
    ids = await queue.enqueue_many(
        conn, [spec(f"ordered-{i}", priority=p) for i, p in enumerate(priorities)])
    # Spread run_at into the past (ties included) so the second key matters.
    offsets = [5, 1, 3, 2, 9, 3, 0, 2, 5, 7]
    for job_id, back in zip(ids, offsets, strict=True):
        await conn.execute("UPDATE jobs SET run_at = now() - make_interval(secs => %s) "
                           "WHERE id = %s", (back, job_id))
    expected = [r["id"] for r in await rows(
        conn, "SELECT id FROM jobs ORDER BY priority DESC, run_at, id")]
    # The expectation is not just insertion order.
    assert expected != sorted(expected)
    one_by_one = [(await claim(conn, OWNER, 1))[0].id for _ in range(4)]
    assert one_by_one == expected[:4]
    batch = await claim(conn, OWNER, 3)
    assert [c.id for c in batch] == expected[4:7]
    assert {c.id for c in await claim(conn, OWNER, 100)} == set(expected[7:])


async def test_delayed_job_is_not_claimed_early(conn) -> None:
    """A delayed job waits as `scheduled`, out of the claim index; the stager makes it
    `new` only once its run_at has come (by the database's clock)."""
    (later,) = await queue.enqueue_many(conn, [spec("later", delay=1.0)])
    (now_id,) = await queue.enqueue_many(conn, [spec("now", priority=0)])
    assert (await job(conn, later))["status"] == "scheduled"
    first = await claim(conn, OWNER, 10)
    assert [c.id for c in first] == [now_id]
    run_at = await scalar(conn, "SELECT run_at FROM jobs WHERE id = %s", (later,))

    async def claimed_later():
        # The clock read before the stager runs: its own now() is at least this, so a job
        # already due by it must be staged. (Read after the stager, a busy machine's
        # clock could pass run_at in between and blame a stager that was right.)
        not_due_before = await scalar(conn, "SELECT now() < %s", (run_at,))
        staged = await queue.stage_due(conn)
        if not staged:
            assert not_due_before or (await job(conn, later))["status"] != "scheduled"
        got = await claim(conn, OWNER, 10)
        if got:
            (running,) = await queue.job_attempts(conn, later)
            return got, running["claimed_at"]
        return None

    got, claimed_at = await wait_until(claimed_later, 5, interval=0.05, what="the delayed job")
    assert [c.id for c in got] == [later]
    assert claimed_at >= run_at  # by the database's clock


async def test_a_future_job_inserted_by_plain_sql_is_neither_claimed_nor_left_in_place(
        conn) -> None:
    """An INSERT that gives run_at but not status makes a `new` row in the future: the claim
    skips it, and the scout's job_schedule_early moves it to `scheduled`."""
    await conn.execute("INSERT INTO jobs (name, run_at) VALUES ('sql', now() + interval '1 h')")
    assert await claim(conn, OWNER, 10) == []
    assert await queue.schedule_early(conn, ["default"]) == 1
    assert await scalar(conn, "SELECT status::text FROM jobs") == "scheduled"
    assert await queue.schedule_early(conn, ["default"]) == 0


async def test_concurrent_claimers_never_share_a_job(db_url, conn) -> None:
    total = 2000
    ids = set(await add_jobs(conn, total))
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(4)]

    async def drain(c: psycopg.AsyncConnection[Any], owner: str) -> list[int]:
        mine: list[int] = []
        while batch := await queue.claim(c, owner, 25, 30):
            mine.extend(row.id for row in batch)
        return mine

    try:
        results = await asyncio.gather(*(drain(c, f"{OWNER}-{i}") for i, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    everything = [job_id for got in results for job_id in got]
    assert len(everything) == len(set(everything)), "a job was claimed twice"
    assert set(everything) == ids
    assert all(results), "a claimer got nothing: the test did not run them concurrently"
    owners = await rows(conn, "SELECT lease_owner, count(*) AS n FROM jobs GROUP BY lease_owner")
    assert {r["lease_owner"]: r["n"] for r in owners} == {
        f"{OWNER}-{i}": len(got) for i, got in enumerate(results)}
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE attempts = 1") == total
    # Each claimer ends its attempts; each attempt gets exactly one row, owned by its claimer.
    for i, got in enumerate(results):
        done = await queue.complete_batch(conn, f"{OWNER}-{i}", [(job_id, 1) for job_id in got])
        assert done == set(got)
    attempt_rows = await rows(conn, "SELECT owner, count(*) AS n FROM job_attempts "
                                    "WHERE attempt = 1 GROUP BY owner")
    assert {r["owner"]: r["n"] for r in attempt_rows} == {
        f"{OWNER}-{i}": len(got) for i, got in enumerate(results)}
    assert await scalar(conn, "SELECT count(*) FROM job_attempts") == total


async def test_a_fenced_completion_passes_no_permit_on(conn) -> None:
    """A completion the reaper beat keeps its permit back: the statement that found it
    fenced claims nothing for it (the claim would otherwise begin before the reaper's
    commit took the row away from this owner: two rows held on one permit)."""
    await add_jobs(conn, 3)
    (first,) = await claim(conn, OWNER, 1)
    await conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 ms' "
                       "WHERE id = %s", (first.id,))
    assert await queue.reap_expired(conn) == {first.id: "new"}
    done, claimed = await queue.complete_and_claim(
        conn, OWNER, [(first.id, first.attempt)], [("default", 1)], 30.0)
    assert (done, claimed) == (set(), []), "a fenced completion passed its permit on"
    done, claimed = await queue.complete_and_claim(conn, OWNER, [], [("default", 1)], 30.0)
    assert done == set() and len(claimed) == 1  # a free permit claims as before
    running = claimed[0]
    done, claimed = await queue.complete_and_claim(
        conn, OWNER, [(running.id, running.attempt)], [("default", 1)], 30.0)
    assert done == {running.id}
    assert len(claimed) == 1  # a completion that commits passes its permit on
