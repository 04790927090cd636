"""The reaper against completions and against itself (River #1302): a job whose lease just
expired ends in exactly one consistent state, whoever wins; a completed job is never moved
back; two reapers never reap one lease twice."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg

from boundq.core import queue
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome
from tests.helpers import add_jobs, claim, claim_one, expire_leases, job, rows, scalar

OWNER = "owner-racer"
ROUNDS = 25
PER_ROUND = 20


async def _open(db_url: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(db_url, autocommit=True)


CLAIMED_AT: dict[int, Any] = {}  # job id -> when its attempt was claimed


async def _expired_batch(conn, n: int, **fields: Any) -> list[tuple[int, int]]:
    ids = await add_jobs(conn, n, **fields)
    claimed = await claim(conn, OWNER, n)
    assert sorted(c.id for c in claimed) == sorted(ids)
    CLAIMED_AT.update((c.id, c.claimed_at) for c in claimed)
    await expire_leases(conn, ids)
    return [(c.id, c.attempt) for c in claimed]


async def _jitter() -> None:
    await asyncio.sleep(random.choice([0, 0, 0.0005, 0.001, 0.002]))


async def test_completion_racing_the_reaper_ends_in_one_state(db_url, conn) -> None:
    rng = random.Random(1302)
    a, b = await _open(db_url), await _open(db_url)
    winners = {"completion": 0, "reaper": 0}
    try:
        for _ in range(ROUNDS):
            keys = await _expired_batch(conn, PER_ROUND, kind="effect", max_attempts=5)
            ids = {k[0] for k in keys}
            rng.shuffle(keys)

            fine_grained = rng.random() < 0.6

            async def complete(keys=keys, fine_grained=fine_grained):
                await _jitter()
                if not fine_grained:
                    return await queue.complete_batch(a, OWNER, keys)
                done: set[int] = set()
                for key in keys:  # one statement per job, interleaving with the reaper's
                    done |= await queue.complete_batch(a, OWNER, [key])
                return done

            async def reap(fine_grained=fine_grained):
                await _jitter()
                if not fine_grained:
                    return await queue.reap_expired(b)
                found: dict[int, str] = {}
                while more := await queue.reap_expired(b, 3):
                    assert found.keys().isdisjoint(more)
                    found.update(more)
                    await asyncio.sleep(0)
                return found

            pair = [complete(), reap()]
            if rng.random() < 0.5:
                pair.reverse()
            results = await asyncio.gather(*pair)
            completed = next(r for r in results if isinstance(r, set))
            reaped = next(r for r in results if isinstance(r, dict))
            winners["completion"] += len(completed)
            winners["reaper"] += len(reaped)

            assert completed.isdisjoint(reaped), completed & set(reaped)
            assert completed | set(reaped) == ids
            assert set(reaped.values()) <= {"new"}

            found = await rows(
                conn,
                "SELECT j.id, j.status::text AS status, j.attempts, a.outcome::text AS outcome, "
                "a.finished_at IS NOT NULL AS closed, a.owner, a.claimed_at, "
                "(SELECT count(*) FROM job_effects e WHERE e.job_id = j.id) AS effects, "
                "(SELECT count(*) FROM job_attempts x WHERE x.job_id = j.id) AS n_attempts "
                "FROM jobs j JOIN job_attempts a ON a.job_id = j.id AND a.attempt = 1 "
                "WHERE j.id = ANY(%s)",
                (sorted(ids),),
            )
            # Whichever side won wrote the attempt's one row: no job is left without it.
            assert len(found) == len(ids), sorted(ids - {r["id"] for r in found})
            for r in found:
                assert r["attempts"] == 1 and r["n_attempts"] == 1 and r["closed"], r
                assert r["owner"] == OWNER and r["claimed_at"] == CLAIMED_AT[r["id"]], r
                if r["id"] in completed:
                    assert (r["status"], r["outcome"], r["effects"]) == ("success", "success", 1), r
                else:
                    assert (r["status"], r["outcome"], r["effects"]) == ("new", "lost", 0), r
            # Reaping again finds nothing, and a completed job stays completed.
            assert await queue.reap_expired(b) == {}
            for job_id in reaped:  # clear the requeued ones out of the next round's claim
                await queue.cancel(conn, job_id)
    finally:
        await a.close()
        await b.close()
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 0
    assert winners["completion"] > 0 and winners["reaper"] > 0, winners  # both sides won some


async def test_failure_racing_the_reaper_ends_in_one_state(db_url, conn) -> None:
    rng = random.Random(7)
    a, b = await _open(db_url), await _open(db_url)
    try:
        for _ in range(ROUNDS // 2):
            keys = await _expired_batch(conn, PER_ROUND, max_attempts=1)
            ids = {k[0] for k in keys}
            outcomes = [Outcome(i, n, AttemptOutcome.ERROR, "handler error") for i, n in keys]
            rng.shuffle(outcomes)
            failed, reaped = await asyncio.gather(
                queue.fail_batch(a, OWNER, outcomes, 0, 0), queue.reap_expired(b))
            assert set(failed).isdisjoint(reaped)
            assert set(failed) | set(reaped) == ids
            found = await rows(
                conn,
                "SELECT j.id, j.status::text AS status, a.outcome::text AS outcome, a.error "
                "FROM jobs j JOIN job_attempts a ON a.job_id = j.id WHERE j.id = ANY(%s)",
                (sorted(ids),),
            )
            assert len(found) == len(ids)
            for r in found:
                assert r["status"] == "failed"  # max_attempts=1: dead either way
                expected = ("error", "handler error") if r["id"] in failed else (
                    "lost", "lease expired")
                assert (r["outcome"], r["error"]) == expected, r
    finally:
        await a.close()
        await b.close()


async def test_two_reapers_never_reap_one_lease_twice(db_url, conn) -> None:
    a, b = await _open(db_url), await _open(db_url)
    total = 0
    try:
        for _ in range(5):
            keys = await _expired_batch(conn, 200, max_attempts=5)
            ids = {k[0] for k in keys}
            first, second = await asyncio.gather(queue.reap_expired(a, 50),
                                                 queue.reap_expired(b, 50))
            while True:  # small batches, so the two interleave over several rounds
                more_a, more_b = await asyncio.gather(queue.reap_expired(a, 50),
                                                      queue.reap_expired(b, 50))
                if not more_a and not more_b:
                    break
                assert set(more_a).isdisjoint(more_b)
                assert set(first).isdisjoint(more_a) and set(second).isdisjoint(more_b)
                first.update(more_a)
                second.update(more_b)
            assert set(first).isdisjoint(second)
            assert set(first) | set(second) == ids
            total += len(ids)
            await conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = now() "
                               "WHERE status = 'new'")
    finally:
        await a.close()
        await b.close()
    assert await scalar(conn, "SELECT count(*) FROM job_attempts WHERE outcome = 'lost'") == total
    assert await scalar(conn, "SELECT count(*) FROM job_attempts") == total
    assert await scalar(conn, "SELECT max(attempts) FROM jobs") == 1


async def test_reaper_skips_a_job_whose_completion_is_in_flight(db_url, conn) -> None:
    """The completion holds the row (not yet committed) when the reaper runs: the reaper
    must skip it, not wait and not overwrite it after the commit."""
    ((job_id, attempt),) = await _expired_batch(conn, 1)
    completer = await _open(db_url)
    try:
        await completer.execute("BEGIN")
        assert await queue.complete_batch(completer, OWNER, [(job_id, attempt)]) == {job_id}
        assert await asyncio.wait_for(queue.reap_expired(conn), 5) == {}
        await completer.execute("COMMIT")
    finally:
        await completer.close()
    assert await queue.reap_expired(conn) == {}
    row = await job(conn, job_id)
    assert row["status"] == "success"
    assert [a["outcome"] for a in await queue.job_attempts(conn, job_id)] == ["success"]


async def test_reaper_leaves_a_lease_renewed_before_it_looked(db_url, conn) -> None:
    ((job_id, attempt),) = await _expired_batch(conn, 1)
    assert await queue.heartbeat(conn, OWNER, [(job_id, attempt)], 30) == {job_id}
    assert await queue.reap_expired(conn) == {}
    assert (await job(conn, job_id))["lease_owner"] == OWNER


async def test_reaper_leaves_unexpired_leases_and_dead_letters_the_last_attempt(conn) -> None:
    await add_jobs(conn, 1, max_attempts=1)
    live = await claim_one(conn, OWNER, lease_s=60)
    assert await queue.reap_expired(conn) == {}
    await expire_leases(conn, [live.id])
    assert await queue.reap_expired(conn) == {live.id: "failed"}
    row = await job(conn, live.id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["finished_at"] is not None and OWNER in row["last_error"]
