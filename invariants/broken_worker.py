"""Deliberately broken queues, for the harness's self-test. Test code only: core is
never changed. `python -m invariants.broken_worker VARIANT` patches the named SQL blocks
(or one queue function) in its own process and then runs the ordinary `boundq worker`.

Each variant breaks one rule of docs/design.md (ownership, or a flow limit); the variant's
database has the jobs_legal_transition trigger dropped (see variants.py) so that a bug
shows up as a history violation the checker must find, instead of being refused by that
last guard.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

from boundq.core import floors, queue, schedules
from boundq.core.queries import Q

# The worker's clock: in this model, the database clock plus this worker's clock error
# (a per-connection setting the harness gives each worker). A worker that sends its
# own time.time() for lease math behaves exactly so when its clock is off by that much.
WORKER_NOW = ("(now() + coalesce(current_setting('boundq.worker_clock_skew', true), '0 s')"
              "::interval)")

# The claim half of job_complete_and_claim, written as UPDATE ... WHERE id IN (SELECT ...
# LIMIT n FOR UPDATE SKIP LOCKED): replaces its `picked` and `claimed` CTEs (the harness
# runs one queue, which the subquery walks in index order).
IN_SUBQUERY_CLAIM = """claimed AS (
    UPDATE jobs AS j
    SET status = 'processing',
        attempts = j.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_s)s::float8),
        started_at = now(),
        updated_at = now()
    WHERE j.id IN (
        SELECT id FROM jobs
        WHERE status = 'new' AND queue = (%(queues)s::text[])[1]
          AND run_at <= now() AND %(limits)s::int[] IS NOT NULL
        ORDER BY priority DESC, run_at, id
        LIMIT %(total)s
        FOR UPDATE SKIP LOCKED)
    RETURNING j.id, j.attempts, j.kind, j.queue, j.payload, j.timeout_s, j.run_at,
              j.created_at, greatest(extract(epoch FROM now() - j.run_at), 0)::float8 AS waited_s,
              j.trace_parent, j.priority, false AS aged
), events AS ("""

REAP_FETCH = """
SELECT id FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NULL
  AND status = 'processing' AND lease_expires_at < now()
LIMIT %(limit)s
"""

# The update trusts the stale list: no lock, no re-check of the guard. It reads the owner
# for the attempt row unlocked as well (NULL once the job has moved on), and writes that row
# over whatever row the attempt already has: refused by the primary key instead, a reap of
# a job that finished meanwhile would fail and be retried forever, and the bug would show
# as a wedged reaper rather than as the wrong history this variant exists to produce.
REAP_UPDATE_BY_ID = """
WITH seen AS MATERIALIZED (
    SELECT id, lease_owner, started_at FROM jobs WHERE id = ANY(%(ids)s::bigint[])
), reaped AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.attempts >= j.max_attempts
                      THEN 'failed'::job_status ELSE 'new'::job_status END,
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        started_at = CASE WHEN j.attempts >= j.max_attempts THEN j.started_at END,
        run_at = now(),
        last_error = 'lease expired (owner ' || coalesce(j.lease_owner, '?') || ')',
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM seen
    WHERE j.id = seen.id
    RETURNING j.id, j.attempts, j.status, seen.lease_owner, seen.started_at
), ended AS (
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome, error)
    SELECT id, attempts, coalesce(lease_owner, '?'), coalesce(started_at, now()), now(),
           'lost', 'lease expired'
    FROM reaped
    ON CONFLICT (job_id, attempt) DO UPDATE
    SET finished_at = now(), outcome = 'lost', error = 'lease expired'
)
SELECT id, status::text AS status FROM reaped
"""

# What a fetch-then-update reaper does between its two statements (log, decide, batch).
REAP_GAP_S = 0.25


async def reap_fetch_then_update(conn: Any, limit: int = 1000) -> dict[int, str]:
    """River #1302: fetch expired ids, then update them by id from that stale list."""
    cur = await conn.execute(REAP_FETCH, {"limit": limit})
    ids = [row[0] for row in await cur.fetchall()]
    if not ids:
        return {}
    await asyncio.sleep(REAP_GAP_S)
    cur = await conn.execute(REAP_UPDATE_BY_ID, {"ids": ids})
    return {row[0]: row[1] for row in await cur.fetchall()}


# A claim that leases what it is told to, limits or not (the broken limited claims' second
# half): the first `n` runnable jobs of one queue.
PLAIN_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE status = 'new' AND queue = %(queue)s AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT greatest(%(n)s, 0)
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET status = 'processing', attempts = j.attempts + 1, lease_owner = %(owner)s,
    lease_expires_at = now() + make_interval(secs => %(lease_s)s::float8),
    started_at = now(), updated_at = now()
FROM picked WHERE j.id = picked.id
RETURNING j.id, j.attempts, j.kind, j.queue, j.payload, j.timeout_s, j.run_at, j.created_at,
          greatest(extract(epoch FROM now() - j.run_at), 0)::float8, now()
"""

# Room under the queue's concurrency as one process sees it: its own running jobs.
ROOM_LOCAL = """
SELECT coalesce((SELECT concurrency FROM job_queues WHERE name = %(queue)s), %(n)s)
       - (SELECT count(*) FROM jobs WHERE lease_owner = %(owner)s AND queue = %(queue)s
                                      AND status = 'processing')
"""

# Room under the queue's concurrency counted globally, but in its own statement: nothing
# holds the count true until the claim that relies on it.
ROOM_GLOBAL = """
SELECT coalesce((SELECT concurrency FROM job_queues WHERE name = %(queue)s), %(n)s)
       - (SELECT count(*) FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NULL
                                      AND queue = %(queue)s)
"""

# What an application-side check does between its read and its claim (a round trip, a
# decision, a log line).
CHECK_GAP_S = 0.2


def limited_claim(room_sql: str, gap_s: float) -> Any:
    """queue.claim_limited with the limit checked by `room_sql`, outside the claim."""

    async def claim_limited(conn: Any, owner: str, queue_name: str, n: int, lease_s: float,
                            *, oldest: int = 0) -> list[queue.ClaimedRow]:
        params = {"owner": owner, "queue": queue_name, "n": n, "lease_s": lease_s}
        cur = await conn.execute(room_sql, params)
        row = await cur.fetchone()
        room = min(n, int(row[0])) if row and row[0] is not None else n
        if room <= 0:
            return []
        if gap_s:
            await asyncio.sleep(gap_s)
        cur = await conn.execute(PLAIN_CLAIM, {**params, "n": room})
        return [queue.ClaimedRow(*r) for r in await cur.fetchall()]

    return claim_limited
# A scheduler that checks "is this tick still due?", creates the jobs in one statement
# and records the ticks (moving the watermark) in another: two schedulers that both pass
# the check make the tick's job twice, and one killed between the statements leaves a job
# whose tick is still due, so the next scheduler makes it again.
SPLIT_TICK_CHECK = """
SELECT job_kind, job_queue, job_payload, job_priority, job_max_attempts, job_timeout_s,
       job_delay_s
FROM job_schedules
WHERE name = %(name)s AND version = %(version)s AND next_tick_at = %(window_start)s
"""
SPLIT_TICK_JOBS = """
INSERT INTO jobs (name, kind, queue, payload, priority, run_at, max_attempts, timeout_s)
SELECT %(name)s || '@' || to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       %(kind)s, %(queue)s, %(payload)s, %(priority)s, t, %(max_attempts)s, %(timeout_s)s
FROM unnest(%(ticks)s::timestamptz[]) AS t
RETURNING id
"""
SPLIT_TICK_RECORD = """
WITH advanced AS (
    UPDATE job_schedules SET next_tick_at = %(next_tick_at)s
    WHERE name = %(name)s RETURNING name
)
INSERT INTO job_schedule_ticks (schedule, tick_at, job_id, window_start)
SELECT a.name, t.tick_at, t.job_id, %(window_start)s
FROM advanced AS a, unnest(%(ticks)s::timestamptz[], %(ids)s::bigint[]) AS t(tick_at, job_id)
ON CONFLICT (schedule, tick_at) DO NOTHING
"""
SPLIT_TICK_GAP_S = 0.2


async def fire_in_two_statements(conn: Any, f: schedules.Fire, keep: int) -> schedules.Fired:
    cur = await conn.execute(SPLIT_TICK_CHECK, {"name": f.name, "version": f.version,
                                                "window_start": f.window_start})
    template = await cur.fetchone()
    if template is None:
        return schedules.Fired(False, (), (), 0)
    kind, queue_, payload, priority, max_attempts, timeout_s, _ = template
    cur = await conn.execute(SPLIT_TICK_JOBS, {
        "name": f.name, "kind": kind, "queue": queue_, "payload": payload,
        "priority": priority, "max_attempts": max_attempts, "timeout_s": timeout_s,
        "ticks": list(f.ticks)})
    ids = [row[0] for row in await cur.fetchall()]
    await asyncio.sleep(SPLIT_TICK_GAP_S)  # what a scheduler does between two statements
    await conn.execute(SPLIT_TICK_RECORD, {"name": f.name, "next_tick_at": f.next_tick_at,
                                           "window_start": f.window_start,
                                           "ticks": list(f.ticks), "ids": ids})
    return schedules.Fired(True, f.ticks, tuple(ids), 0)


# Follow-up jobs inserted by a statement of their own, before the completion that writes
# their job's success: a completion then fenced (a reaper or a cancel took the job), lost
# with its connection and written again, or never sent (the worker killed in between)
# leaves follow-ups of an attempt that did not succeed, or a second set.
CHAIN_INSERT = """
INSERT INTO jobs (name, kind, queue, payload, priority, run_at, status, max_attempts,
                  timeout_s, dedupe_key, trace_parent)
SELECT f.name, f.kind, f.queue, f.payload, f.priority, at.run_at,
       CASE WHEN at.run_at > now() THEN 'scheduled'::job_status ELSE 'new'::job_status END,
       f.max_attempts, f.timeout_s, f.dedupe_key, f.trace_parent
FROM json_each(%(followups)s::json) AS fu(job_id, rows)
CROSS JOIN LATERAL json_to_recordset(fu.rows) AS f(
    name text, kind text, queue text, payload jsonb, priority smallint, run_at timestamptz,
    delay_s float8, max_attempts int, timeout_s float8, dedupe_key text, trace_parent text)
CROSS JOIN LATERAL (SELECT coalesce(f.run_at, now())
                           + make_interval(secs => f.delay_s) AS run_at) AS at
"""
# What a worker does between the two statements (a round trip, a log line).
CHAIN_GAP_S = 1.0


def followups_outside_completion(complete: Any) -> Any:
    """queue.complete_and_claim with the follow-ups inserted before it, separately."""

    async def complete_and_claim(conn: Any, owner: str, done: Any, plan: Any, lease_s: float,
                                 results: Any = None, *, free: int | None = None,
                                 oldest: Any = None, followups: Any = None,
                                 floors: Any = floors.NO_FLOORS) -> Any:
        if followups:
            await conn.execute(CHAIN_INSERT, {"followups": queue._results_object(followups)})
            await asyncio.sleep(CHAIN_GAP_S)
        return await complete(conn, owner, done, plan, lease_s, results, free=free,
                              oldest=oldest, floors=floors)

    return complete_and_claim


_scan = floors.ClaimFloors.scan


def scan_without_rescan(self: floors.ClaimFloors, queues: Sequence[str]) -> floors.FloorScan:
    """ClaimFloors.scan whose walk from the head is never due once floors are known: a job
    made runnable below a floor is never seen again while the snapshot holds."""
    self._next_walk = math.inf
    return _scan(self, queues)


def _sub(block: str, pattern: str, replacement: str, count: int = 0) -> None:
    text, n = re.subn(pattern, replacement, Q.text(block), count=count)
    if n == 0:
        raise SystemExit(f"broken_worker: {block} no longer matches {pattern!r}")
    Q._blocks[block] = text


def patch(variant: str) -> None:
    if variant == "unfenced_completion":
        # Completion by id alone: a stale owner's result overwrites whatever the job is now.
        _sub("job_complete_and_claim",
             r"\n\s*AND j\.attempts = mine\.attempt\s*\n\s*AND j\.lease_owner = %\(owner\)s"
             r"\s*\n\s*AND j\.status = 'processing'", "", count=1)
        # A job the stale owner overwrites may be waiting again (reaped, so started_at is
        # null): the attempt row keeps the NOT NULL claimed_at, or every batch holding it
        # would fail and the worker wedge (reported as no_lost_job, not as this bug).
        _sub("job_complete_and_claim",
             r"SELECT id, attempts, %\(owner\)s, started_at, now\(\), 'success' FROM done",
             "SELECT id, attempts, %(owner)s, coalesce(started_at, now()), now(), 'success' "
             "FROM done", count=1)
        # Its attempt row goes over the row the attempt already has. Refused by the primary
        # key instead, a stale completion of an attempt that had ended would fail its whole
        # batch again and again: a wedged worker, not the wrong history this variant shows.
        _sub("job_complete_and_claim", r"(?s)(INSERT INTO job_attempts\b.*?\bFROM done)",
             r"\1\n    ON CONFLICT (job_id, attempt) DO UPDATE"
             r"\n    SET finished_at = now(), outcome = 'success'",
             count=1)
    elif variant == "in_subquery_claim":
        text, n = re.subn(r"(?s)picked AS MATERIALIZED \(.*?\), events AS \(",
                          lambda _: IN_SUBQUERY_CLAIM.strip(), Q.job_complete_and_claim, count=1)
        if n != 1:
            raise SystemExit("broken_worker: job_complete_and_claim has no picked/claimed CTEs")
        Q._blocks["job_complete_and_claim"] = text
    elif variant == "fetch_then_update_reaper":
        queue.reap_expired = reap_fetch_then_update
    elif variant == "process_local_limit":
        queue.claim_limited = limited_claim(ROOM_LOCAL, 0.0)
    elif variant == "limit_outside_claim":
        queue.claim_limited = limited_claim(ROOM_GLOBAL, CHECK_GAP_S)
    elif variant == "followups_outside_completion":
        queue.complete_and_claim = followups_outside_completion(queue.complete_and_claim)
    elif variant == "split_tick_scheduler":
        schedules.fire = fire_in_two_statements
    elif variant == "floors_without_rescan":
        floors.ClaimFloors.scan = scan_without_rescan  # type: ignore[method-assign]
    elif variant == "unblock_on_any_end":
        pass  # the bug is the database's: variants.UNBLOCK_ON_ANY_END
    elif variant == "worker_clock_leases":
        lease = r"now\(\) \+ make_interval\(secs => %\(lease_s\)s::float8\)"
        for block in ("job_complete_and_claim", "job_heartbeat"):
            _sub(block, lease, f"{WORKER_NOW} + make_interval(secs => %(lease_s)s::float8)")
        _sub("job_reap_expired", r"lease_expires_at < now\(\)", f"lease_expires_at < {WORKER_NOW}")
    else:
        raise SystemExit(f"broken_worker: unknown variant {variant!r}")


def main(argv: list[str]) -> int:
    patch(argv[0])
    from boundq.cli import main as cli_main

    return cli_main(["worker", "--handlers", "invariants.handlers", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
