"""The scoped reads cost what the unscoped ones cost, whatever other queues hold: a
tenant's list page reads at most its scan window, and its /stats counts walk the claim
index of its own queues. Each statement runs as the API runs it (an API connection, the
generic plan of the prepared statement) under EXPLAIN (ANALYZE); a failure prints the
plan."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from boundq.core import queue
from boundq.core.db import conninfo
from boundq.core.queries import Q
from tests.helpers import as_prepared, placeholders, plan_nodes, plan_rows_read, spec

OTHERS = 20_000  # jobs of queue `a`, newer than tenant B's
MINE = 5  # jobs of queue `b`


async def _explain(db_url: str, name: str, args: dict[str, str]) -> dict[str, Any]:
    block = Q.text(name)
    async with await psycopg.AsyncConnection.connect(conninfo(db_url, "api"),
                                                     autocommit=True) as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE under_test AS {as_prepared(block)}".encode())
        values = ", ".join(args[p] for p in placeholders(block))
        cur = await conn.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE under_test({values})".encode())
        row = await cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


@pytest.fixture
async def crowded(db_url: str, conn: psycopg.AsyncConnection[Any]) -> str:
    await queue.enqueue_many(conn, [spec(f"b{i}", queue="b") for i in range(MINE)])
    await queue.enqueue_many(conn, [spec(f"a{i}", queue="a") for i in range(OTHERS)])
    return db_url


@pytest.mark.parametrize("analyzed", [False, True])
async def test_a_scoped_page_reads_its_window_only(crowded: str, conn, analyzed: bool) -> None:
    if analyzed:
        await conn.execute("ANALYZE jobs")
    scan = 100
    plan = await _explain(crowded, "job_list_in_queues", {
        "before_id": "NULL", "scan": str(scan), "queues": "'{b}'", "status": "NULL",
        "kind": "NULL", "queue": "NULL", "limit": "51"})
    scans = [n for n in plan_nodes(plan) if n.get("Relation Name") == "jobs"]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [
        ("Index Scan", "jobs_pkey")], json.dumps(plan, indent=1)
    assert scans[0]["Actual Rows"] <= scan, json.dumps(plan, indent=1)


@pytest.mark.parametrize("analyzed", [False, True])
async def test_scoped_counts_walk_the_callers_queues(crowded: str, conn, analyzed: bool
                                                     ) -> None:
    if analyzed:
        await conn.execute("ANALYZE jobs")
    plan = await _explain(crowded, "job_count_active_in_queues_capped",
                          {"queues": "'{b}'", "cap": "100000"})
    read = plan_rows_read(plan, "jobs")
    assert read <= 4 * MINE + 20, json.dumps(plan, indent=1)
    plan = await _explain(crowded, "job_oldest_waiting_in_queues", {"queues": "'{b}'"})
    assert plan_rows_read(plan, "jobs") <= 20, json.dumps(plan, indent=1)
