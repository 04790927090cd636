"""Queue operations: one function per statement of core/sql/queries.sql.

Every function takes an autocommit AsyncConnection; the caller decides where it comes
from (a pool, the worker's writer connection). Input is validated into JobSpec before
these are called (core/validation.py), so nothing here half-writes a batch: enqueue_many
runs in one transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import msgspec
import psycopg
from psycopg.rows import dict_row

from boundq.core.errors import DedupeKeyTaken, InvalidTransition, JobNotFound, JobValidationError
from boundq.core.floors import NO_FLOORS, FloorScan
from boundq.core.queries import Q
from boundq.core.states import AttemptOutcome, JobStatus
from boundq.core.validation import JobSpec

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]

_COPY_JOBS = (
    "COPY jobs (id, name, kind, queue, payload, priority, run_at, status, max_attempts, "
    "timeout_s, trace_parent) FROM STDIN"
)


class ClaimedRow(NamedTuple):
    """One job a claim leased to this owner (job_complete_and_claim, job_held_by_owner)."""

    id: int
    attempt: int
    kind: str
    queue: str
    payload: Any
    timeout_s: float | None
    run_at: datetime
    created_at: datetime
    waited_s: float
    claimed_at: datetime
    trace_parent: str | None = None  # W3C traceparent stored at create (core/tracing)
    priority: int = 0
    aged: bool = False  # taken by the aging lane (job_complete_and_claim), not in order


# A claim plan: how many jobs to take from each queue, in one statement.
ClaimPlan = Sequence[tuple[str, int]]


@dataclass(slots=True)
class Outcome:
    """How one attempt ended, as the worker reports it for a batched write."""

    id: int
    attempt: int
    outcome: AttemptOutcome
    error: str | None = None
    retryable: bool = True
    result_json: str | None = None  # a success's result, encoded; None = no result
    # a success's follow-up jobs (JobContext.enqueue), encoded as one JSON array of job
    # rows (followups_json); None = none. Inserted by the statement that writes the success.
    followups_json: str | None = None


def int_array(values: Iterable[int]) -> str:
    """A batch of ids or attempt numbers as one array literal for `%(x)s::bigint[]`.
    psycopg adapts a Python list element by element in Python; for the completer's
    batches that was ~1.6 µs a job, the joined literal ~0.3 µs (measured). Only ints
    go in, so nothing needs quoting."""
    return "{" + ",".join(map(str, values)) + "}"


def _spec_params(spec: JobSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.kind,
        "queue": spec.queue,
        "payload": spec.payload_json,
        "priority": spec.priority,
        "run_at": spec.run_at,
        "delay_s": spec.delay_s,
        "max_attempts": spec.max_attempts,
        "timeout_s": spec.timeout_s,
        "dedupe_key": spec.dedupe_key,
        "trace_parent": spec.trace_parent,
    }


async def enqueue(conn: Conn, spec: JobSpec, *,
                  queues: Sequence[str] | None = None) -> tuple[Row, bool]:
    """Insert one job; returns (job, created). A live duplicate dedupe_key returns the
    existing job with created=False. A job with depends_on is created `blocked`
    (enqueue_dependent); `queues` (None: any) bounds the jobs it may name."""
    if spec.has_dependencies:
        return await enqueue_dependent(conn, spec, queues=queues), True
    for _ in range(3):  # the duplicate may finish between our INSERT and our SELECT
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(Q.job_insert, _spec_params(spec))
        row = await cur.fetchone()
        if row is not None:
            return row, True
        await cur.execute(Q.job_get_active_by_dedupe_key, {"dedupe_key": spec.dedupe_key})
        row = await cur.fetchone()
        if row is not None:
            return row, False
    raise RuntimeError(f"dedupe_key {spec.dedupe_key!r} kept changing owner")


# --- dependencies (migration 0008) ------------------------------------------------------
DEADLOCK_RETRIES = 3
T = TypeVar("T")


async def retrying_deadlocks(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt` (one whole transaction) again when PostgreSQL chose it as a deadlock's
    victim, up to DEADLOCK_RETRIES more times. A create that locks parents (id order) can
    meet a worker's batch completing two of them in another order; the victim's
    transaction was rolled back, so nothing of it was written and running it again is
    safe. Raises the last DeadlockDetected if every try was a victim."""
    for tries_left in range(DEADLOCK_RETRIES, -1, -1):
        try:
            return await attempt()
        except psycopg.errors.DeadlockDetected:
            if not tries_left:
                raise
    raise AssertionError("unreachable")

async def lock_parents(conn: Conn, ids: Iterable[int],
                       queues: Sequence[str] | None = None) -> dict[int, str]:
    """Lock the named jobs (id order) until the transaction ends; returns id -> status of
    those that exist within `queues` (None: any queue)."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    cur = await conn.execute(Q.job_lock_parents, {
        "ids": wanted, "queues": None if queues is None else list(queues)})
    return {int(row[0]): str(row[1]) for row in await cur.fetchall()}


def missing_parent_error(job_id: int) -> JobValidationError:
    """The one answer for a parent that does not exist or is outside the caller's queues."""
    return JobValidationError("depends_on", f"job {job_id} not found")


async def link_dependencies(conn: Conn, pairs: Sequence[tuple[int, int]]) -> None:
    """(child, parent) pairs of children just inserted `blocked`: settles each child
    (blocked, new/scheduled, or cancelled when a parent already failed or was cancelled)."""
    if pairs:
        await conn.execute(Q.job_link_dependencies, {
            "children": int_array(p[0] for p in pairs), "parents": int_array(p[1] for p in pairs)})


async def enqueue_dependent(conn: Conn, spec: JobSpec, *,
                            queues: Sequence[str] | None = None) -> Row:
    """Insert one job that waits for spec.depends_on, in one transaction: the parents are
    locked, the job inserted `blocked` and linked. A parent missing (or outside `queues`)
    is a JobValidationError naming depends_on, and nothing is written."""
    if spec.depends_on_index:
        raise JobValidationError("depends_on_index", "is only known in a bulk upload")
    params = _spec_params(spec)
    del params["dedupe_key"]

    async def attempt() -> Row:
        async with conn.transaction():
            found = await lock_parents(conn, spec.depends_on, queues)
            for parent in spec.depends_on:
                if parent not in found:
                    raise missing_parent_error(parent)
            cur = await conn.execute(Q.job_insert_blocked, params)
            inserted = await cur.fetchone()
            assert inserted is not None
            job_id = int(inserted[0])
            await link_dependencies(conn, [(job_id, parent) for parent in spec.depends_on])
            return await get_job(conn, job_id)

    return await retrying_deadlocks(attempt)


async def parents(conn: Conn, job_id: int) -> list[int]:
    """The ids of the jobs `job_id` depends on."""
    cur = await conn.execute(Q.job_parents_list, {"id": job_id})
    return [int(row[0]) for row in await cur.fetchall()]


async def enqueue_many(conn: Conn, specs: Sequence[JobSpec]) -> list[int]:
    """Insert many jobs in one transaction; returns their ids in input order.

    Jobs without a dedupe_key go through COPY with ids reserved up front (COPY returns
    nothing). Jobs with one go through INSERT ... ON CONFLICT DO NOTHING; a duplicate gets
    the id of the live job that holds its key.
    """
    if not specs:
        return []
    if any(s.depends_on_index for s in specs):
        raise JobValidationError("depends_on_index", "is only known in a bulk upload")
    if any(s.depends_on for s in specs):
        # One job at a time (a parent may be an earlier spec's job), in one transaction.
        async with conn.transaction():
            out: list[int] = []
            for spec in specs:
                if spec.depends_on:
                    out.append(int((await enqueue_dependent(conn, spec))["id"]))
                else:
                    out.extend(await enqueue_many(conn, [spec]))
            return out
    ids: list[int] = [0] * len(specs)
    plain = [i for i, s in enumerate(specs) if s.dedupe_key is None]
    keyed = [i for i, s in enumerate(specs) if s.dedupe_key is not None]
    async with conn.transaction():
        if plain:
            cur = await conn.execute(Q.job_reserve_ids, {"n": len(plain)})
            row = await cur.fetchone()
            assert row is not None
            db_now, reserved = row
            async with conn.cursor().copy(_COPY_JOBS) as copy:
                for index, job_id in zip(plain, reserved, strict=True):
                    await copy.write_row(copy_row(job_id, specs[index], db_now))
                    ids[index] = job_id
        if keyed:
            await _insert_deduped(conn, specs, keyed, ids)
    return ids


def copy_row(job_id: int, spec: JobSpec, db_now: datetime) -> tuple[Any, ...]:
    """One job as a row of _COPY_JOBS. The transaction's clock (db_now) turns a delay into
    run_at and decides `scheduled` (run_at in the future) against `new`."""
    run_at = spec.run_at or db_now
    if spec.delay_s:
        run_at = run_at + timedelta(seconds=spec.delay_s)
    status = ("blocked" if spec.has_dependencies
              else "scheduled" if run_at > db_now else "new")
    return (job_id, spec.name, spec.kind, spec.queue, spec.payload_json, spec.priority, run_at,
            status, spec.max_attempts, spec.timeout_s, spec.trace_parent)


async def _insert_deduped(conn: Conn, specs: Sequence[JobSpec], keyed: list[int],
                          ids: list[int]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING, then look up the live holder of each skipped key.
    A holder may finish between the two statements; its key is then free and the job is
    inserted on the next round (as enqueue() does for one job)."""
    by_key: dict[str, int] = {}
    left = keyed
    for _ in range(3):
        chosen = [specs[i] for i in left]
        cur = await conn.execute(
            Q.job_insert_many_deduped,
            {
                "names": [s.name for s in chosen],
                "kinds": [s.kind for s in chosen],
                "queues": [s.queue for s in chosen],
                "payloads": [s.payload_json for s in chosen],
                "priorities": [s.priority for s in chosen],
                "run_ats": [s.run_at for s in chosen],
                "delays": [s.delay_s for s in chosen],
                "max_attempts": [s.max_attempts for s in chosen],
                "timeouts": [s.timeout_s for s in chosen],
                "dedupe_keys": [s.dedupe_key for s in chosen],
                "trace_parents": [s.trace_parent for s in chosen],
            },
        )
        by_key.update({key: job_id for job_id, key in await cur.fetchall()})
        for key in {specs[i].dedupe_key for i in left} - by_key.keys():
            found = await conn.execute(Q.job_get_active_by_dedupe_key, {"dedupe_key": key})
            holder = await found.fetchone()
            if holder is not None:
                by_key[str(key)] = holder[0]
        left = [i for i in left if specs[i].dedupe_key not in by_key]
        if not left:
            break
    else:
        raise RuntimeError(f"dedupe keys kept changing owner: {len(left)} left")
    for index in keyed:
        ids[index] = by_key[str(specs[index].dedupe_key)]


def followups_json(specs: Sequence[JobSpec]) -> str:
    """Validated follow-up jobs as one JSON array of rows with job_insert_batch's fields,
    the value of one job id in job_complete_and_claim's `followups` (payloads go in as
    their encoded text, not decoded and encoded again)."""
    return _followup_encoder.encode([
        {"name": s.name, "kind": s.kind, "queue": s.queue,
         "payload": msgspec.Raw(s.payload_json), "priority": s.priority, "run_at": s.run_at,
         "delay_s": s.delay_s, "max_attempts": s.max_attempts, "timeout_s": s.timeout_s,
         "dedupe_key": s.dedupe_key, "trace_parent": s.trace_parent}
        for s in specs]).decode()


_followup_encoder = msgspec.json.Encoder()


async def complete_and_claim(
    conn: Conn, owner: str, done: Sequence[tuple[int, int]], plan: ClaimPlan, lease_s: float,
    results: Mapping[int, str] | None = None, *, free: int | None = None,
    oldest: Mapping[str, int] | None = None, followups: Mapping[int, str] | None = None,
    floors: FloorScan = NO_FLOORS,
) -> tuple[set[int], list[ClaimedRow]]:
    """Finish successful attempts (id, attempt) and claim per the plan, in one statement.
    The claim takes no more than the completions that commit plus `free` (the permits that
    were free before; default: the plan's total less len(done)). Returns the ids whose
    success committed now and the rows claimed. `results` maps a job id to its result,
    already encoded as JSON; `followups` maps a job id to the follow-up jobs its handler
    created (followups_json), inserted only if that job's success commits here; `oldest`
    says how many of a queue's claims take its longest-waiting jobs whatever their priority
    (the aging lane); `floors` where each walk of the claim index starts (core/floors.py)."""
    total = sum(p[1] for p in plan)
    ages = oldest or {}
    cur = await conn.execute(
        Q.job_complete_and_claim,
        {"owner": owner, "ids": int_array(d[0] for d in done),
         "attempts": int_array(d[1] for d in done), "results": _results_object(results),
         "followups": _results_object(followups),
         "queues": [p[0] for p in plan], "limits": int_array(p[1] for p in plan),
         "oldest": int_array(min(ages.get(p[0], 0), p[1]) for p in plan),
         "total": total, "free": max(0, total - len(done)) if free is None else free,
         "lease_s": lease_s, **floors.params()},
    )
    completed: set[int] = set()
    claimed: list[ClaimedRow] = []
    for row in await cur.fetchall():
        if row[0]:
            claimed.append(ClaimedRow(row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                                      row[8], row[9], row[10], row[11], row[12], row[13]))
        else:
            completed.add(row[1])
    return completed, claimed


def _results_object(results: Mapping[int, str] | None) -> str:
    """{"<id>": <JSON>, ...}: one parameter, read with `-> id::text` (results) or
    json_each (follow-ups)."""
    if not results:
        return "{}"
    return "{" + ",".join(f'"{job_id}":{text}' for job_id, text in results.items()) + "}"


async def oldest_snapshot_age(conn: Conn) -> float:
    """Seconds since the oldest snapshot-holding transaction of the database began."""
    cur = await conn.execute(Q.activity_oldest_snapshot_get)
    row = await cur.fetchone()
    return float(row[0]) if row else 0.0


async def claim(conn: Conn, owner: str, limit: int, lease_s: float,
                queue: str = "default") -> list[ClaimedRow]:
    """Claim up to `limit` runnable jobs of one queue (nothing to finish)."""
    _, claimed = await complete_and_claim(conn, owner, (), [(queue, limit)], lease_s)
    return claimed


async def claim_limited(conn: Conn, owner: str, queue: str, n: int, lease_s: float, *,
                        oldest: int = 0) -> list[ClaimedRow]:
    """Claim up to n jobs of one queue under the limits of the queue and of the kinds
    (boundq_claim_limited: the database counts, refills and takes turns), `oldest` of
    them through the aging lane."""
    if n <= 0:
        return []
    cur = await conn.execute(
        Q.job_claim_limited,
        {"owner": owner, "queue": queue, "n": n, "oldest": min(oldest, n), "lease_s": lease_s},
    )
    return [ClaimedRow(*row) for row in await cur.fetchall()]


async def held_by_owner(conn: Conn, owner: str) -> list[ClaimedRow]:
    """Every row this owner holds `processing` (reconciliation after a lost answer)."""
    cur = await conn.execute(Q.job_held_by_owner, {"owner": owner})
    return [ClaimedRow(*row) for row in await cur.fetchall()]


async def heartbeat(
    conn: Conn, owner: str, held: Sequence[tuple[int, int]], lease_s: float
) -> set[int]:
    """Extend leases of (id, attempt) pairs; returns the ids still owned."""
    if not held:
        return set()
    cur = await conn.execute(
        Q.job_heartbeat,
        {"owner": owner, "ids": int_array(h[0] for h in held),
         "attempts": int_array(h[1] for h in held), "lease_s": lease_s},
    )
    return {row[0] for row in await cur.fetchall()}


async def complete_batch(conn: Conn, owner: str, done: Sequence[tuple[int, int]],
                         results: Mapping[int, str] | None = None, *,
                         followups: Mapping[int, str] | None = None) -> set[int]:
    """Mark (id, attempt) pairs successful (with their follow-up jobs); returns the ids
    whose success is committed (others were fenced): written now, or by this owner's
    earlier try whose answer was lost."""
    if not done:
        return set()
    committed, _ = await complete_and_claim(conn, owner, done, (), 0.0, results,
                                            followups=followups)
    return committed | await settled_successes(conn, owner,
                                               [d for d in done if d[0] not in committed])


async def settled_successes(conn: Conn, owner: str, missed: Sequence[tuple[int, int]]
                            ) -> set[int]:
    """Of attempts a completion did not write, those this owner's earlier try (whose answer
    was lost) already completed."""
    if not missed:
        return set()
    settled = await _settled_by_owner(conn, owner, missed)
    return {job_id for (job_id, _), (outcome, _) in settled.items()
            if outcome == AttemptOutcome.SUCCESS.value}


async def fail_batch(
    conn: Conn, owner: str, failed: Sequence[Outcome], retry_base_s: float, retry_max_s: float
) -> dict[int, str]:
    """Record failed attempts; returns {id: status} for those whose failure is committed
    (now, or by this owner's earlier try whose answer was lost); others were fenced."""
    if not failed:
        return {}
    cur = await conn.execute(
        Q.job_fail_batch,
        {
            "owner": owner,
            "ids": int_array(f.id for f in failed),
            "attempts": int_array(f.attempt for f in failed),
            "errors": [(f.error or "")[:2000] for f in failed],
            "outcomes": [f.outcome.value for f in failed],
            "retryable": [f.retryable for f in failed],
            "retry_base_s": retry_base_s,
            "retry_max_s": retry_max_s,
        },
    )
    statuses: dict[int, str] = {row[0]: row[1] for row in await cur.fetchall()}
    missed = [f for f in failed if f.id not in statuses]
    if missed:
        settled = await _settled_by_owner(conn, owner, [(f.id, f.attempt) for f in missed])
        for f in missed:
            outcome, status = settled.get((f.id, f.attempt), (None, ""))
            if outcome == f.outcome.value:
                statuses[f.id] = status
    return statuses


async def _settled_by_owner(conn: Conn, owner: str, keys: Sequence[tuple[int, int]]
                            ) -> dict[tuple[int, int], tuple[str, str]]:
    """{(id, attempt): (outcome, job status)} of the attempts this owner already closed."""
    cur = await conn.execute(
        Q.job_attempts_settled_by_owner,
        {"owner": owner, "ids": int_array(k[0] for k in keys),
         "attempts": int_array(k[1] for k in keys)},
    )
    return {(row[0], row[1]): (row[2], row[3]) for row in await cur.fetchall()}


async def release_batch(conn: Conn, owner: str, held: Sequence[tuple[int, int]]) -> set[int]:
    if not held:
        return set()
    cur = await conn.execute(
        Q.job_release_batch,
        {"owner": owner, "ids": int_array(h[0] for h in held),
         "attempts": int_array(h[1] for h in held)},
    )
    return {row[0] for row in await cur.fetchall()}


async def reap_expired(conn: Conn, limit: int = 1000) -> dict[int, str]:
    """Requeue (or dead-letter) jobs whose lease expired; returns {id: new status}."""
    cur = await conn.execute(Q.job_reap_expired, {"limit": limit})
    return {row[0]: row[1] for row in await cur.fetchall()}


async def stage_due(conn: Conn, limit: int = 1000) -> int:
    """Make due `scheduled` jobs `new`; returns how many."""
    cur = await conn.execute(Q.job_stage_due, {"limit": limit})
    return len(await cur.fetchall())


async def schedule_early(conn: Conn, queues: Sequence[str], limit: int = 1000) -> int:
    """Move `new` rows whose run_at is in the future (plain SQL inserts) to `scheduled`."""
    if not queues:
        return 0
    cur = await conn.execute(Q.job_schedule_early, {"queues": list(queues), "limit": limit})
    return len(await cur.fetchall())


async def next_due_in(conn: Conn) -> float | None:
    """Seconds until the earliest scheduled job is due (negative: overdue); None: none."""
    cur = await conn.execute(Q.job_next_due)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def queues_waiting(conn: Conn) -> list[str]:
    """The queues with runnable jobs."""
    cur = await conn.execute(Q.job_queues_waiting)
    return [row[0] for row in await cur.fetchall()]


async def delete_finished_before(conn: Conn, keep_s: float, statuses: Sequence[str],
                                 limit: int) -> int:
    """One retention batch: the oldest jobs of `statuses` that finished over keep_s ago."""
    cur = await conn.execute(Q.job_delete_finished_before,
                             {"keep_s": keep_s, "statuses": list(statuses), "limit": limit})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def fold_tallies(conn: Conn, seconds_kept: float, minutes_kept: float) -> int:
    cur = await conn.execute(Q.job_tallies_fold, {"seconds_kept": seconds_kept,
                                                  "minutes_kept": minutes_kept})
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def get_job(conn: Conn, job_id: int) -> Row:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.job_get, {"id": job_id})
    row = await cur.fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return row


async def job_attempts(conn: Conn, job_id: int) -> list[Row]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.job_attempts_list, {"id": job_id})
    return await cur.fetchall()


async def cancel(conn: Conn, job_id: int) -> Row:
    """new | processing -> cancelled; raises JobNotFound / InvalidTransition otherwise."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.job_cancel, {"id": job_id})
    row = await cur.fetchone()
    if row is None:
        current = await get_job(conn, job_id)
        raise InvalidTransition(job_id, current["status"], "cancel")
    return row


async def retry(conn: Conn, job_id: int) -> Row:
    """failed -> new; raises JobNotFound / InvalidTransition otherwise, and DedupeKeyTaken
    when a live job holds the failed job's dedupe_key (it cannot be active twice)."""
    cur = conn.cursor(row_factory=dict_row)
    try:
        await cur.execute(Q.job_retry, {"id": job_id})
    except psycopg.errors.UniqueViolation:
        current = await get_job(conn, job_id)
        key = str(current["dedupe_key"])
        holder = await cur.execute(Q.job_get_active_by_dedupe_key, {"dedupe_key": key})
        found = await holder.fetchone()
        raise DedupeKeyTaken(job_id, key, found["id"] if found else None) from None
    row = await cur.fetchone()
    if row is None:
        current = await get_job(conn, job_id)
        raise InvalidTransition(job_id, current["status"], "retry")
    return row


async def count_by_status(conn: Conn) -> dict[str, int]:
    cur = await conn.execute(Q.job_count_by_status)
    counts = {status.value: 0 for status in JobStatus}
    counts.update({status: int(n) for status, n in await cur.fetchall()})
    return counts
