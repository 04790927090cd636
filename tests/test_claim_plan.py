"""The claim's plan must not depend on the planner's row estimates (docs/failures.md:
peer queues took 20-70x longer per dequeue on an empty or never-analyzed table).

Each test runs the claim the way a worker does (a connection with the worker's session
settings, the statement prepared once and run with its generic plan) under EXPLAIN
(ANALYZE): the CTE that picks jobs must walk jobs_claim_idx in claim order and stop at
LIMIT, and the whole statement must touch O(limit) rows, not O(backlog). A failure prints
the plan."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from boundq.core import queue
from boundq.core.db import conninfo
from boundq.core.queries import Q
from tests.helpers import as_prepared, placeholders, plan_nodes, plan_rows_read

BACKLOG = 50_000
LIMITS = (5, 100)  # MAX_CONCURRENT_JOBS-sized grants, and CLAIM_BATCH_MAX
# Each size is claimed twice: by priority alone, and with its aging-lane share (the
# longest-waiting jobs: the head of each of the ten priorities, then the oldest of those).
AGED = {5: 1, 100: 10}
OWNER = "plan-test"


def _execute_args(limit: int, oldest: int = 0) -> str:
    """A pure claim of `limit` jobs from the default queue (nothing to complete), `oldest`
    of them through the aging lane."""
    values = {"owner": f"'{OWNER}'", "ids": "'{}'", "attempts": "'{}'", "results": "'{}'",
              "followups": "'{}'",
              "queues": "'{default}'", "limits": f"'{{{limit}}}'", "oldest": f"'{{{oldest}}}'",
              "total": str(limit), "free": str(limit), "lease_s": "30",
              "floor_queues": "'{}'", "floor_priorities": "'{}'", "floor_ats": "'{}'"}
    return ", ".join(values[name] for name in placeholders(Q.job_complete_and_claim))


def _describe(plan: dict[str, Any], depth: int = 0) -> str:
    parts = [_node_line(plan, depth)]
    for child in plan.get("Plans", []):
        parts.append(_describe(child, depth + 1))
    return "\n".join(parts)


def _node_line(node: dict[str, Any], depth: int) -> str:
    bits = [node["Node Type"]]
    for key in ("Subplan Name", "Index Name", "Relation Name"):
        if key in node:
            bits.append(f"{key}={node[key]}")
    bits.append(f"rows={node.get('Actual Rows')}x{node.get('Actual Loops')}")
    for key in ("Rows Removed by Filter", "Rows Removed by Join Filter"):
        if node.get(key):
            bits.append(f"{key}={node[key]}")
    return "  " * depth + " ".join(str(b) for b in bits)


def _check(plan: dict[str, Any], limit: int, backlog: int, oldest: int) -> None:
    shown = _describe(plan)
    picked = [n for n in plan_nodes(plan) if n.get("Subplan Name") == "CTE picked"]
    assert len(picked) == 1, shown
    pick_nodes = list(plan_nodes(picked[0]))
    scans = {(n["Node Type"], n.get("Index Name"))
             for n in pick_nodes if n.get("Relation Name") == "jobs"}
    # claim order from jobs_claim_idx; the aging lane reads its ten heads from the same
    # index and locks them through the primary key
    assert ("Index Scan", "jobs_claim_idx") in scans, f"no walk of jobs_claim_idx:\n{shown}"
    assert scans <= {("Index Scan", "jobs_claim_idx"), ("Index Only Scan", "jobs_claim_idx"),
                     ("Index Scan", "jobs_pkey")}, f"the pick must use the indexes:\n{shown}"
    for node in pick_nodes:  # only the aging lane's ten heads are ever sorted
        if node["Node Type"] in ("Sort", "Incremental Sort"):
            assert node["Actual Rows"] <= 10 * oldest, shown
    claimed = next(n for n in plan_nodes(plan) if n.get("Subplan Name") == "CTE claimed")
    assert claimed["Actual Rows"] == min(limit, backlog), shown
    if backlog >= 1000:  # on a handful of rows any plan is cheap; on a backlog it is not
        work = plan_rows_read(plan, relation="jobs")
        assert work <= 4 * limit + 20 + 12 * oldest, f"claim of {limit} touched {work} rows:\n{shown}"


async def _explain(conn, limit: int, name: str, oldest: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE one claim (it really claims: a rollback would make psycopg drop its
    prepared statements, and a few claimed rows change nothing here)."""
    cur = await conn.execute(
        f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({_execute_args(limit, oldest)})"
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0][0]["Plan"]


async def _claim_is_bounded(worker, conn, limit: int, name: str = "claim_under_test") -> None:
    for oldest in (0, AGED[limit]):
        cur = await conn.execute("SELECT count(*) FROM jobs WHERE status = 'new'")
        row = await cur.fetchone()
        assert row is not None
        _check(await _explain(worker, limit, name, oldest), limit, row[0], oldest)


async def _claims_are_bounded(db_url: str, conn) -> None:
    """Every claim size, on a fresh worker connection."""
    worker = await _worker_conn(db_url)
    try:
        for limit in LIMITS:
            await _claim_is_bounded(worker, conn, limit)
    finally:
        await worker.close()


async def _worker_conn(db_url: str) -> psycopg.AsyncConnection[Any]:
    """A connection with the worker's session settings (generic plans) and the claim
    prepared on it, as a worker's lane prepares it on first use."""
    conn = await psycopg.AsyncConnection.connect(conninfo(db_url, "worker"), autocommit=True)
    await conn.execute(f"PREPARE claim_under_test AS {as_prepared(Q.job_complete_and_claim)}")
    return conn


async def _never_analyzed(conn) -> None:
    # Keep autovacuum away so the table really stays unanalyzed for the whole test.
    await conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = off)")
    cur = await conn.execute(
        "SELECT c.reltuples, s.last_analyze, s.last_autoanalyze FROM pg_class c "
        "JOIN pg_stat_user_tables s ON s.relid = c.oid WHERE c.relname = 'jobs'"
    )
    assert await cur.fetchone() == (-1, None, None), "the table was analyzed"


async def _bulk_insert(conn, n: int = BACKLOG) -> None:
    await conn.execute(
        "INSERT INTO jobs (name, kind, priority) "
        "SELECT 'bulk-' || g, 'noop', (g %% 3)::smallint FROM generate_series(1, %s) AS g",
        (n,),
    )


async def test_claim_plan_on_a_fresh_never_analyzed_table(db_url, conn) -> None:
    await _never_analyzed(conn)
    worker = await _worker_conn(db_url)
    try:
        for limit in LIMITS:
            await _claim_is_bounded(worker, conn, limit)
        await conn.execute("INSERT INTO jobs (name) SELECT 'few-' || g FROM generate_series(1, 8) g")
        for limit in LIMITS:
            await _claim_is_bounded(worker, conn, limit)
    finally:
        await worker.close()


async def test_claim_plan_right_after_a_bulk_insert(db_url, conn) -> None:
    await _never_analyzed(conn)
    await _bulk_insert(conn)
    await _claims_are_bounded(db_url, conn)


async def test_claim_plan_after_idle_polling_then_a_bulk_insert(db_url, conn) -> None:
    """What a worker really runs: its lane's connection prepared the claim on first use and
    claimed from the empty queue for a while (its plan was made then), then a backlog
    arrives. The plan that connection now uses must still be bounded."""
    await _never_analyzed(conn)
    worker = await psycopg.AsyncConnection.connect(conninfo(db_url, "worker"), autocommit=True,
                                                   prepare_threshold=0)
    try:
        for _ in range(15):  # idle polling
            assert await queue.claim(worker, OWNER, LIMITS[-1], 30) == []
        await _bulk_insert(conn)
        cur = await worker.execute(
            "SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE %s",
            ("%picked AS MATERIALIZED%",),
        )
        found = await cur.fetchone()
        assert found is not None, "the lane's claim was not prepared"
        # psycopg's statement: same text, so EXECUTE takes the same arguments
        assert found[1] == as_prepared(Q.job_complete_and_claim)
        name = found[0]
        for limit in LIMITS:
            await _claim_is_bounded(worker, conn, limit, name)
    finally:
        await worker.close()


@pytest.mark.parametrize("history", ["empty", "drained"])
async def test_claim_plan_with_statistics_from_an_empty_queue(db_url, conn, history) -> None:
    """Autovacuum analyzed the table while no job was waiting (empty, or only finished
    jobs after a drain); then a backlog arrives faster than the next analyze."""
    await conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = off)")
    if history == "drained":
        await conn.execute(
            "INSERT INTO jobs (name, status, attempts, started_at, finished_at) "
            "SELECT 'done-' || g, 'success', 1, now(), now() FROM generate_series(1, %s) g",
            (BACKLOG,),
        )
    await conn.execute("ANALYZE jobs")
    await _bulk_insert(conn)
    await _claims_are_bounded(db_url, conn)
