"""Flow control in the claim: queue and kind limits held by the database, pauses, the
path split (limited queues never through the fast statement), and the aging lane that
keeps a low priority from waiting forever. Rates here refill far slower than a test runs
(one token per 1000 s), so no result depends on how fast the machine is."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from boundq.core import flow, queue
from boundq.core.planner import AGING_EVERY, FlowView, QueuePlanner
from tests.helpers import add_jobs, rows, scalar, wait_until

OWNER = "flow"
MINUTE = timedelta(minutes=1)
SLOW = 0.001  # one token per 1000 s: within a test, a bucket never refills


async def _put_queue(conn, name: str, **body) -> None:
    await flow.put_queue(conn, name, flow.parse_settings(body, weighted=True))


async def _put_kind(conn, name: str, **body) -> None:
    await flow.put_kind(conn, name, flow.parse_settings(body, weighted=False))


async def _finish(conn, claimed) -> None:
    done = await queue.complete_batch(conn, OWNER, [(c.id, c.attempt) for c in claimed])
    assert done == {c.id for c in claimed}


async def test_queue_concurrency_is_a_ceiling_on_running_jobs(conn) -> None:
    await add_jobs(conn, 10, queue="mail")
    await _put_queue(conn, "mail", concurrency=3)
    first = await queue.claim_limited(conn, OWNER, "mail", 5, 30)
    assert len(first) == 3
    assert await queue.claim_limited(conn, OWNER, "mail", 5, 30) == []
    await _finish(conn, first[:1])
    assert len(await queue.claim_limited(conn, OWNER, "mail", 5, 30)) == 1
    # jobs of other queues are not held back by it
    await add_jobs(conn, 2, queue="other")
    assert len(await queue.claim_limited(conn, OWNER, "other", 5, 30)) == 2


async def test_concurrent_limited_claims_take_turns(db_url, conn) -> None:
    """Many claimers at once, from separate connections: the running count never passes
    the limit (the claims serialize on the queue's row)."""
    await add_jobs(conn, 200, queue="mail")
    await _put_queue(conn, "mail", concurrency=7)
    conns = [await psycopg.AsyncConnection.connect(db_url, autocommit=True) for _ in range(6)]
    try:
        got = await asyncio.gather(*(queue.claim_limited(c, f"{OWNER}-{i}", "mail", 5, 30)
                                     for i, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    assert sum(len(g) for g in got) == 7
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 7


async def test_rate_limit_spends_the_burst_then_waits_for_tokens(conn) -> None:
    await add_jobs(conn, 10, queue="api")
    await _put_queue(conn, "api", rate_per_s=SLOW, burst=4)
    assert len(await queue.claim_limited(conn, OWNER, "api", 3, 30)) == 3
    assert len(await queue.claim_limited(conn, OWNER, "api", 3, 30)) == 1
    assert await queue.claim_limited(conn, OWNER, "api", 3, 30) == []
    # finishing frees no token (a rate counts starts, not running jobs)
    assert await scalar(conn, "SELECT tokens < 1 FROM job_queues WHERE name = 'api'")


async def test_a_limited_or_paused_queue_is_never_claimed_by_the_fast_statement(conn) -> None:
    await add_jobs(conn, 5, queue="mail")
    await add_jobs(conn, 5, queue="held")
    await _put_queue(conn, "mail", concurrency=1)
    await _put_queue(conn, "held", paused=True)
    assert await queue.claim(conn, OWNER, 5, 30, queue="mail") == []
    assert await queue.claim(conn, OWNER, 5, 30, queue="held") == []
    assert await queue.claim_limited(conn, OWNER, "held", 5, 30) == []
    # weight alone is no limit: the fast statement still serves the queue
    await _put_queue(conn, "held", weight=5)
    assert len(await queue.claim(conn, OWNER, 5, 30, queue="held")) == 5


async def test_kind_limits_hold_across_queues(conn) -> None:
    await add_jobs(conn, 4, queue="a", kind="noop")
    await add_jobs(conn, 4, queue="b", kind="noop")
    await add_jobs(conn, 4, queue="a", kind="effect")
    await _put_kind(conn, "noop", concurrency=3)
    # the fast statement passes over the limited kind and takes the rest
    fast = await queue.claim(conn, OWNER, 10, 30, queue="a")
    assert {c.kind for c in fast} == {"effect"} and len(fast) == 4
    from_a = await queue.claim_limited(conn, OWNER, "a", 10, 30)
    from_b = await queue.claim_limited(conn, OWNER, "b", 10, 30)
    assert [c.kind for c in from_a + from_b] == ["noop"] * 3
    await _put_kind(conn, "noop", paused=True)
    await _finish(conn, from_a + from_b)
    assert await queue.claim_limited(conn, OWNER, "b", 10, 30) == []


async def test_a_kind_out_of_room_does_not_block_the_jobs_behind_it(conn) -> None:
    """Head-of-line: 300 jobs of an exhausted kind ahead of another kind's jobs."""
    await add_jobs(conn, 300, queue="mix", kind="noop", priority=9)
    await add_jobs(conn, 3, queue="mix", kind="effect")
    await _put_kind(conn, "noop", rate_per_s=SLOW, burst=1)
    got = await queue.claim_limited(conn, OWNER, "mix", 10, 30)
    assert sorted(c.kind for c in got) == ["effect"] * 3 + ["noop"]


async def test_limit_changes_are_recorded_with_when_they_took_effect(conn) -> None:
    await _put_queue(conn, "mail", concurrency=2)
    await _put_queue(conn, "mail", concurrency=None, rate_per_s=5.0, burst=10)
    changes = await rows(conn, "SELECT scope, name, concurrency, rate_per_s, burst, changed_at, "
                               "effective_at FROM job_limit_changes ORDER BY id")
    assert [(c["concurrency"], c["rate_per_s"], c["burst"]) for c in changes] == [
        (2, None, 1), (None, 5.0, 10)]
    assert all(c["changed_at"] <= c["effective_at"] for c in changes)


@pytest.mark.parametrize("aging", [True, False])
async def test_aging_lane_claims_a_starved_low_priority_job(conn, aging: bool) -> None:
    """20 priority-0 jobs wait behind a queue that always holds priority-9 work: with the
    aging lane each is claimed within AGING_EVERY claims per job ahead of it (the bound the
    planner states); without it, none is claimed at all."""
    low = set(await add_jobs(conn, 20, queue="q", priority=0))
    await add_jobs(conn, 25 * AGING_EVERY, queue="q", priority=9)
    planner = QueuePlanner(["q"])
    planner.refresh(["q"], FlowView())
    order: list[int] = []
    for _ in range(len(low) * AGING_EVERY):
        split = planner.split(1)
        oldest = split.oldest if aging else {}
        _, got = await queue.complete_and_claim(conn, OWNER, (), [("q", 1)], 30, oldest=oldest)
        order += [c.id for c in got]
    positions = [i for i, job_id in enumerate(order) if job_id in low]
    if aging:
        assert len(positions) == len(low)
        # the k-th low job (0-based) is claimed by claim AGING_EVERY x (k + 1)
        assert all(p < AGING_EVERY * (k + 1) for k, p in enumerate(positions)), positions
    else:
        assert positions == []


async def test_a_limited_claim_takes_no_job_changed_after_its_transaction_began(
        db_url, conn) -> None:
    """The change log orders a job's changes by (txid, seq). boundq_claim_limited runs
    several statements: it has its transaction id from the first (the queue's row lock),
    and a later statement's snapshot can see a job whose create committed after that.
    Claimed then, the job's log would show it processing before it was new. Here the
    claim waits on a kind's row between the two, while the job is created."""
    await scalar(conn, "SELECT boundq_job_events_switch(true)")
    await _put_queue(conn, "mail", concurrency=10)
    await _put_kind(conn, "gate", concurrency=10)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as blocker, \
            await psycopg.AsyncConnection.connect(db_url, autocommit=True) as claimer:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT 1 FROM job_kinds WHERE name = 'gate' FOR UPDATE")
        pid = claimer.info.backend_pid
        claim = asyncio.ensure_future(queue.claim_limited(claimer, OWNER, "mail", 5, 30))
        await wait_until(lambda: scalar(conn, "SELECT wait_event_type = 'Lock' FROM "
                                              "pg_stat_activity WHERE pid = %s", (pid,)),
                         within=10, what="the claim to wait for the kind's row")
        # due before the claim began (a cron tick's run_at is its tick, a promoted or
        # released job's is older still), so the claim's `run_at <= now()` lets it in
        (job_id,) = await add_jobs(conn, 1, queue="mail", run_at=datetime.now(UTC) - MINUTE)
        await blocker.execute("COMMIT")
        assert await claim == []
    # the next claim, a transaction begun after the create, takes it
    assert [c.id for c in await queue.claim_limited(conn, OWNER, "mail", 5, 30)] == [job_id]
    log = await rows(conn, "SELECT status::text AS status FROM job_events WHERE job_id = %s "
                           "ORDER BY txid, seq", (job_id,))
    assert [e["status"] for e in log] == ["new", "processing"]
