"""Long life: heartbeats are HOT updates, retention deletes finished history (and only
that) with everything attached to it, and the reads of /stats cost the same however much
history the table holds."""

from __future__ import annotations

from typing import Any

import psycopg

from boundq.core import queue
from boundq.core.db import conninfo
from boundq.core.queries import Q
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome
from tests.helpers import add_jobs, claim, plan_nodes, plan_rows_read, rows, scalar

OWNER = "long-life"


async def _hot_updates(conn: Any) -> tuple[int, int]:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    cur = await conn.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                             "WHERE relname = 'jobs'")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def test_heartbeats_are_hot_updates(db_url: str, conn: Any) -> None:
    """A heartbeat changes only lease_expires_at, which no index covers: with room on the
    page (fillfactor 80) the row version stays in place (HOT) and no index entry is added."""
    await add_jobs(conn, 50)
    async with await psycopg.AsyncConnection.connect(conninfo(db_url, "heartbeat"),
                                                     autocommit=True) as beat:
        held = [(c.id, c.attempt) for c in await claim(beat, OWNER, 50)]
        before = await _hot_updates(beat)
        for _ in range(3):
            assert len(await queue.heartbeat(beat, OWNER, held, 30.0)) == 50
        after = await _hot_updates(beat)
    updates, hot = after[0] - before[0], after[1] - before[1]
    assert updates == 150
    # With an index on lease_expires_at none was HOT (0 of 150). Not all can be: after the
    # claim's new versions, a page has room for a few more before pruning frees it.
    assert hot >= 0.75 * updates, f"{hot} of {updates} heartbeat updates were HOT"


async def _finish(conn: Any, statuses: dict[str, int], age: str) -> dict[str, list[int]]:
    """Jobs brought to each terminal status by the queue's own statements, then aged."""
    out: dict[str, list[int]] = {}
    for status, n in statuses.items():
        ids = await add_jobs(conn, n, kind="effect", max_attempts=1)
        claimed = await claim(conn, OWNER, n)
        keys = [(c.id, c.attempt) for c in claimed]
        if status == "success":
            await queue.complete_batch(conn, OWNER, keys)
        elif status == "failed":
            await queue.fail_batch(conn, OWNER, [
                Outcome(i, a, AttemptOutcome.ERROR, "x") for i, a in keys], 0, 0)
        else:
            for job_id in ids:
                await queue.cancel(conn, job_id)
        out[status] = ids
    # Terminal rows are absorbing: the test ages them behind the transition guard's back.
    await conn.execute("ALTER TABLE jobs DISABLE TRIGGER jobs_legal_transition")
    await conn.execute("UPDATE jobs SET finished_at = finished_at - %s::interval "
                       "WHERE finished_at IS NOT NULL", (age,))
    await conn.execute("ALTER TABLE jobs ENABLE TRIGGER jobs_legal_transition")
    return out


async def test_retention_deletes_old_finished_jobs_and_what_hangs_on_them(conn: Any) -> None:
    old = await _finish(conn, {"success": 4, "failed": 3, "cancelled": 2}, "2 hours")
    await conn.execute("INSERT INTO idempotency_keys (key, request_hash, job_id) "
                       "SELECT 'k' || id, 'h', id FROM jobs")
    young = await _finish(conn, {"success": 2}, "0 s")
    waiting = await add_jobs(conn, 3)
    running = [c.id for c in await claim(conn, "other-owner", 1)]
    # success and cancelled older than an hour; failed kept (FAILED_RETENTION unset)
    gone = await queue.delete_finished_before(conn, 3600, ["success", "cancelled"], 500)
    assert gone == 6
    left = {r["id"] for r in await rows(conn, "SELECT id FROM jobs")}
    assert left == set(old["failed"]) | set(young["success"]) | set(waiting)
    assert set(running) <= left  # a running job is never touched
    for table, column in (("job_attempts", "job_id"), ("job_effects", "job_id"),
                          ("idempotency_keys", "job_id")):
        orphans = await scalar(conn, f"SELECT count(*) FROM {table} t WHERE NOT EXISTS "
                                     f"(SELECT 1 FROM jobs j WHERE j.id = t.{column})")
        assert orphans == 0, table
    # The kept counts follow: success and cancelled fell by what was deleted.
    totals = {r["queue"]: r for r in await rows(conn, Q.job_tally_totals)}["default"]
    assert (totals["success"], totals["failed"], totals["cancelled"]) == (2, 3, 0)
    assert await queue.delete_finished_before(conn, 3600, ["failed"], 2) == 2  # in batches
    assert await queue.delete_finished_before(conn, 3600, ["failed"], 2) == 1
    assert await queue.delete_finished_before(conn, 3600, ["failed"], 2) == 0


async def test_stats_reads_do_not_grow_with_history(conn: Any) -> None:
    """Every /stats query reads the same number of rows with 20k finished jobs as with
    none: the tallies and the partial indexes, never the history."""
    await add_jobs(conn, 30)
    reads_before = await _stats_reads(conn)
    await conn.execute(
        "INSERT INTO jobs (name, status, attempts, started_at, finished_at) "
        "SELECT 'done-' || g, 'success', 1, now(), now() FROM generate_series(1, 20000) g")
    await conn.execute("ANALYZE jobs")
    reads_after = await _stats_reads(conn)
    for name, before in reads_before.items():
        assert reads_after[name] <= before + 5, (name, before, reads_after[name])


async def _stats_reads(conn: Any) -> dict[str, int]:
    out = {}
    for name, params in (("job_count_active_capped", {"cap": 100_000}),
                         ("job_tally_totals", None), ("job_tally_recent", {"window_s": 60}),
                         ("job_oldest_waiting", None)):
        cur = await conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + Q.text(name).encode(),
                                 params)
        row = await cur.fetchone()
        assert row is not None
        plan = row[0][0]["Plan"]
        assert not any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "jobs"
                       for n in plan_nodes(plan)), name
        out[name] = plan_rows_read(plan, relation="jobs")
    return out


async def test_count_arrays_add_up_elementwise(conn: Any) -> None:
    """boundq_add_counts, the pickup histograms' sum (the claim's tallies upsert, the fold's
    boundq_sum_counts): arrays of different lengths add up to the longer one's length, and
    a missing or NULL element counts as 0."""
    cases: list[tuple[list[int | None] | None, list[int | None] | None, list[int]]] = [
        ([1, 2, 3], [10, 20, 30], [11, 22, 33]),
        ([], [1, 2], [1, 2]),
        ([5, None, 1], [1], [6, 0, 1]),
        (None, [4], [4]),
        (None, None, []),
    ]
    for a, b, total in cases:
        cur = await conn.execute("SELECT boundq_add_counts(%s::bigint[], %s::bigint[])", (a, b))
        assert await cur.fetchone() == (total,), (a, b)
    cur = await conn.execute("SELECT boundq_sum_counts(h) FROM (VALUES ('{1,1}'::bigint[]), "
                             "('{}'), ('{2,0,7}')) AS v(h)")
    assert await cur.fetchone() == ([3, 1, 7],)
