"""The dashboard's read model: what it counts, and that no page reads history.

"Reads cost the same at 10k and 10M finished rows": every block of core/sql/ui.sql runs
under EXPLAIN ANALYZE on a table with 25,000 finished rows beside a few dozen active
ones, with the API's session settings, and may touch only a bounded number of rows of
`jobs` (with custom plans and with the generic plan psycopg switches to after a few
executions). A control shows that the measure sees a scan of history."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from boundq.core.db import conninfo
from boundq.core.queries import Q
from boundq.server.ui import data
from tests.helpers import add_jobs, plan_nodes, plan_rows_read

HISTORY = 25_000
ACTIVE_BOUND = 200  # rows of jobs a page may touch here: the active rows, a page, a probe

KIND_CAPS = {"next_cap": data.KIND_NEXT_WINDOW, "finished_cap": data.KIND_FINISHED_WINDOW}
# block, parameters, how many rows of jobs it may touch
BLOCKS: list[tuple[str, dict[str, Any], int]] = [
    ("job_count_by_queue_capped", {"cap": data.COUNT_CAP, "queues": None}, ACTIVE_BOUND),
    ("job_count_by_queue_capped", {"cap": data.COUNT_CAP, "queues": ["a"]}, ACTIVE_BOUND),
    ("job_count_by_kind_capped", KIND_CAPS | {"queues": None}, ACTIVE_BOUND),
    ("job_count_by_kind_capped", KIND_CAPS | {"queues": ["b"]}, ACTIVE_BOUND),
    ("job_list_failed", {"queues": None, "before_id": None, "scan": data.PAGE_SIZE + 1,
                         "limit": data.PAGE_SIZE + 1}, data.PAGE_SIZE + 1),
    ("job_list_failed", {"queues": ["a"], "before_id": 10_000, "scan": data.FAILED_SCAN_MAX,
                         "limit": data.PAGE_SIZE + 1}, data.FAILED_SCAN_MAX),
    ("job_list_failed_scan_floor", {"before_id": None, "scan": data.FAILED_SCAN_MAX},
     data.FAILED_SCAN_MAX),
    ("job_list_running", {"queues": None, "limit": data.RUNNING_SHOWN}, ACTIVE_BOUND),
    ("job_list_next_in_queue", {"queue": "a", "limit": data.PAGE_SIZE}, data.PAGE_SIZE),
    ("job_queues_list", {"queues": None}, 0),
    ("job_queues_list", {"queues": ["a"]}, 0),
]


async def _history(conn: psycopg.AsyncConnection[Any]) -> None:
    """Finished rows two hours old (plain INSERTs: the tallies are not what is read here),
    and active rows in three queues."""
    await conn.execute(
        "INSERT INTO jobs (name, kind, queue, status, attempts, started_at, finished_at, "
        "last_error) SELECT 'old', 'noop', 'q' || mod(i, 3), "
        "(ARRAY['success', 'success', 'success', 'failed', 'cancelled'])[mod(i, 5) + 1]::job_status,"
        " 1, now() - interval '2 hours', now() - interval '2 hours', NULL "
        "FROM generate_series(1, %s) AS i", (HISTORY,))
    for queue in ("a", "b", "c"):
        await add_jobs(conn, 10, queue=queue)
    await add_jobs(conn, 5, queue="a", delay=3600)
    await conn.execute(
        "UPDATE jobs SET status = 'processing', attempts = 1, started_at = now(), "
        "lease_owner = 'test', lease_expires_at = now() + interval '1 hour' "
        "WHERE id IN (SELECT id FROM jobs WHERE status = 'new' AND queue = 'b' LIMIT 2)")
    await conn.execute("ANALYZE jobs")


async def _rows_read(conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]
                     ) -> tuple[int, str]:
    """Rows of jobs the block touched, and its plan's scans (for the failure message)."""
    cur = await conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {Q.text(name)}", params)
    row = await cur.fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    scans = [f"{n['Node Type']} {n.get('Index Name', '')} rows={n.get('Actual Rows')}"
             f" loops={n.get('Actual Loops')}" for n in plan_nodes(plan)
             if n.get("Relation Name") == "jobs"]
    return plan_rows_read(plan, relation="jobs"), "\n".join(scans)


@pytest.mark.parametrize("plan_mode", ["auto", "force_generic_plan"])
async def test_no_dashboard_read_touches_history(db_url: str, conn, plan_mode: str) -> None:
    await _history(conn)
    async with await psycopg.AsyncConnection.connect(conninfo(db_url, "api"),
                                                     autocommit=True) as api:
        await api.execute(f"SET plan_cache_mode = {plan_mode}")
        for name, params, bound in BLOCKS:
            async with data.reading(api):
                # Prepared (as psycopg does after a few executions): the mode then holds.
                await api.execute(Q.text(name), params, prepare=True)
                read, scans = await _rows_read(api, name, params)
            assert read <= bound, f"{name}({json.dumps(params)}) read {read} rows:\n{scans}"
        control, _ = await _rows_read(api, "job_count_by_status", {})
        assert control >= HISTORY, "the measure does not see a scan of history"


async def test_queue_and_kind_counts(conn) -> None:
    await add_jobs(conn, 3, queue="a", kind="sleep", payload={"ms": 1})
    await add_jobs(conn, 2, queue="b")
    await add_jobs(conn, 1, queue="b", delay=600)
    await conn.execute(
        "UPDATE jobs SET status = 'processing', attempts = 1, started_at = now(), "
        "lease_owner = 'test', lease_expires_at = now() + interval '1 hour' "
        "WHERE id = (SELECT min(id) FROM jobs WHERE queue = 'a')")
    await conn.execute(
        "INSERT INTO jobs (name, kind, queue, status, attempts, started_at, finished_at) "
        "VALUES ('x', 'cpu', 'b', 'failed', 1, now(), now()), "
        "('y', 'cpu', 'b', 'success', 1, now(), now()), "
        "('z', 'cpu', 'a', 'success', 1, now() - interval '1 hour', "
        "now() - interval '1 hour')")
    await conn.execute("INSERT INTO jobs (name, queue, status) VALUES ('w', 'b', 'blocked')")
    rows = await data.queue_rows(conn, None)
    by_name = {q.name: q for q in rows}
    assert set(by_name) == {"a", "b"}
    assert (by_name["a"].new, by_name["a"].running) == (data.Count(2), 1)
    assert (by_name["b"].new, by_name["b"].scheduled, by_name["b"].blocked) == (
        data.Count(2), data.Count(1), data.Count(1))
    kinds = {k.kind: k for k in await data.kind_rows(conn, None)}
    assert (kinds["sleep"].running, kinds["sleep"].next_up) == (1, data.Count(2))
    assert kinds["noop"].next_up == data.Count(2)
    # Finished in the last minute only (the hour-old success is history).
    assert (kinds["cpu"].succeeded_last_minute, kinds["cpu"].failed_last_minute) == (1, 1)
    scoped = {k.kind: k for k in await data.kind_rows(conn, ["a"])}
    assert set(scoped) == {"sleep"}
    rows = await data.queue_rows(conn, ["b"])
    assert [q.name for q in rows] == ["b"]


async def test_flow_control_limits_are_read_within_the_scope(conn) -> None:
    await conn.execute("INSERT INTO job_queues (name, concurrency, paused) "
                       "VALUES ('a', 3, false), ('b', NULL, true)")
    await add_jobs(conn, 1, queue="c")
    rows = {q.name: q for q in await data.queue_rows(conn, None)}
    assert set(rows) == {"a", "b", "c"}  # a queue with settings and no jobs has a row
    assert rows["a"].limits == data.QueueLimits(3, None, 1, 1, False)
    assert rows["b"].limits is not None and rows["b"].limits.paused
    assert rows["c"].limits is None
    assert [q.name for q in await data.queue_rows(conn, ["b", "c"])] == ["b", "c"]
    assert await data.queue_limits(conn, ["c"]) == {}


async def test_counts_stop_at_the_cap(conn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "COUNT_CAP", 4)
    await add_jobs(conn, 6, queue="a")
    await add_jobs(conn, 3, queue="b")
    rows = await data.queue_rows(conn, None)
    by_name = {q.name: q for q in rows}
    assert by_name["a"].new == data.Count(4, capped=True)
    assert by_name["b"].new == data.Count(3, capped=False)
    assert data.total_of(rows).new == data.Count(7, capped=True)


async def test_failed_pages_are_keyset_pages_newest_first(conn) -> None:
    await conn.execute(
        "INSERT INTO jobs (name, queue, status, attempts, started_at, finished_at, last_error) "
        "SELECT 'f' || i, CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END, 'failed', 1, "
        "now(), now(), 'boom ' || i FROM generate_series(1, 7) AS i")
    ids = [r[0] for r in await (await conn.execute(
        "SELECT id FROM jobs ORDER BY id DESC")).fetchall()]
    seen: list[int] = []
    cursor = None
    while True:
        page = await data.failed_page(conn, None, cursor, limit=3)
        seen += [j["id"] for j in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids
    page = await data.failed_page(conn, ["even"], None, limit=10)
    assert [j["last_error"] for j in page.jobs] == ["boom 6", "boom 4", "boom 2"]
    assert page.next_cursor is None


async def test_the_chart_minutes_come_from_the_tallies(conn) -> None:
    await conn.execute(
        "INSERT INTO job_tallies (grain, bucket, slot, queue, succeeded, dead, claimed, "
        "pickup_hist) VALUES "
        "('m', date_trunc('minute', now()) - interval '5 minutes', 0, 'a', 7, 1, 8, "
        "'{8}'), ('s', date_trunc('second', now()), 1, 'b', 2, 0, 2, '{0,0,0,0,0,0,0,2}'), "
        "('m', date_trunc('minute', now()) - interval '3 hours', 0, 'a', 50, 0, 50, '{50}')")
    now = await data.db_now(conn)
    minutes = await data.minutes(conn, None, now)
    assert len(minutes) == data.CHART_MINUTES
    assert minutes[-1].at == now.replace(second=0, microsecond=0)
    assert (minutes[-1].finished, minutes[-1].pickup_p50_s) == (2, 1.0)
    assert (minutes[-6].succeeded, minutes[-6].failed, minutes[-6].pickup_p99_s) == (7, 1, 0.005)
    assert sum(m.finished for m in minutes) == 10  # the 3-hour-old minute is not shown
    scoped = await data.minutes(conn, ["a"], now)
    assert sum(m.finished for m in scoped) == 8
