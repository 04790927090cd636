"""The fenced batch writes (complete, fail, heartbeat, release), the lost-answer lookups
and the reaper must reach their rows by key: O(batch) rows read, whatever the planner
believes about the table (docs/failures.md).

On a never-analyzed table the planner guessed that the guard `lease_owner = $owner AND
status = 'processing'` matched one row and scanned all of `jobs` once per completion batch:
a drain of 100k jobs fell from ~14k to ~1.4k jobs/s. Each test runs the statements the way
a worker does (its session settings, each statement prepared once with its generic plan)
under EXPLAIN (ANALYZE) and counts the rows read."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from boundq.core import queue
from boundq.core.db import conninfo
from boundq.core.floors import NO_FLOORS
from boundq.core.queries import Q
from boundq.core.states import AttemptOutcome
from tests.helpers import as_prepared, placeholders, plan_nodes, plan_rows_read

BACKLOG = 50_000
# Flow-control settings: one row per configured queue or kind, read whole by design.
SETTINGS_TABLES = {"job_queues", "job_kinds"}
BATCH = 500
OWNER = "plan-test"


def _describe(plan: dict[str, Any], depth: int = 0) -> str:
    bits = [plan["Node Type"], plan.get("Index Name", ""), plan.get("Relation Name", ""),
            f"rows={plan.get('Actual Rows')}x{plan.get('Actual Loops')}"]
    lines = ["  " * depth + " ".join(b for b in bits if b)]
    lines += [_describe(child, depth + 1) for child in plan.get("Plans", [])]
    return "\n".join(lines)


async def _explain(worker: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]
                   ) -> dict[str, Any]:
    """EXPLAIN ANALYZE the named statement as a lane runs it: prepared (once per name and
    connection), executed with its generic plan."""
    sql = Q.text(name)
    cur = await worker.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", (name,))
    if await cur.fetchone() is None:
        await worker.execute(f"PREPARE {name} AS {as_prepared(sql)}")  # type: ignore[arg-type]
    order = placeholders(sql)
    args = ", ".join(["%s"] * len(order))
    # Client-side binding: EXECUTE's arguments become literals the prepared types coerce.
    cur = psycopg.AsyncClientCursor(worker)
    await cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({args})",  # type: ignore[arg-type]
                      [params[key] for key in order])
    row = await cur.fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


async def _assert_by_key(worker: psycopg.AsyncConnection[Any], name: str,
                         params: dict[str, Any], batch: int) -> None:
    plan = await _explain(worker, name, params)
    shown = _describe(plan)
    assert not any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") not in SETTINGS_TABLES
                   for n in plan_nodes(plan)), f"{name}:\n{shown}"
    read = plan_rows_read(plan)
    assert read <= 6 * batch + 20, f"{name} for {batch} jobs read {read} rows:\n{shown}"


async def _fill(conn: psycopg.AsyncConnection[Any], statistics: str) -> None:
    await conn.execute("ALTER TABLE jobs SET (autovacuum_enabled = off)")
    await conn.execute("ALTER TABLE job_attempts SET (autovacuum_enabled = off)")
    if statistics == "from_an_empty_queue":
        await conn.execute("ANALYZE jobs")
        await conn.execute("ANALYZE job_attempts")
    await conn.execute(
        "INSERT INTO jobs (name, kind) SELECT 'bulk-' || g, 'noop' "
        "FROM generate_series(1, %s) AS g", (BACKLOG,))


async def _settled_history(worker: psycopg.AsyncConnection[Any], rounds: int) -> None:
    """Finished attempts, so job_attempts is as large as a busy queue's."""
    for _ in range(rounds):
        claimed = await queue.claim(worker, OWNER, BATCH, 30)
        await queue.complete_batch(worker, OWNER, [(r.id, r.attempt) for r in claimed])


@pytest.mark.parametrize("statistics", ["never_analyzed", "from_an_empty_queue", "current"])
async def test_fenced_writes_reach_rows_by_key(db_url: str, conn: Any, statistics: str) -> None:
    await _fill(conn, statistics)
    async with await psycopg.AsyncConnection.connect(conninfo(db_url, "worker"),
                                                     autocommit=True) as worker:
        await _settled_history(worker, rounds=20)  # 10k attempt rows
        if statistics == "current":  # as autovacuum would leave them during a drain
            await conn.execute("ANALYZE jobs")
            await conn.execute("ANALYZE job_attempts")
        claimed = await queue.claim(worker, OWNER, BATCH, 30)
        assert len(claimed) == BATCH
        ids = [r.id for r in claimed]
        attempts = [r.attempt for r in claimed]
        keys = {"owner": OWNER, "ids": ids, "attempts": attempts}
        await _assert_by_key(worker, "job_heartbeat", {**keys, "lease_s": 30}, BATCH)
        await _assert_by_key(worker, "job_attempts_settled_by_owner", keys, BATCH)
        await _assert_by_key(worker, "job_held_by_owner", {"owner": OWNER}, BATCH)
        await _assert_by_key(worker, "job_reap_expired", {"limit": 1000}, BATCH)
        half = BATCH // 2
        first = {"owner": OWNER, "ids": ids[:half], "attempts": attempts[:half],
                 "results": "{}", "followups": "{}", "queues": [], "limits": [], "oldest": [],
                 "total": 0,
                 "free": 0,
                 "lease_s": 30, **NO_FLOORS.params()}
        await _assert_by_key(worker, "job_complete_and_claim", first, half)
        rest = {"owner": OWNER, "ids": ids[half:], "attempts": attempts[half:]}
        await _assert_by_key(worker, "job_fail_batch", {
            **rest, "errors": ["boom"] * (BATCH - half),
            "outcomes": [AttemptOutcome.ERROR.value] * (BATCH - half),
            "retryable": [True] * (BATCH - half), "retry_base_s": 0.0, "retry_max_s": 0.0,
        }, BATCH - half)
        claimed = await queue.claim(worker, OWNER, BATCH, 30)
        assert len(claimed) == BATCH
        await _assert_by_key(worker, "job_release_batch", {
            "owner": OWNER, "ids": [r.id for r in claimed], "attempts": [r.attempt for r in claimed],
        }, BATCH)
        # The settled lookup after everything above committed: every row matches now.
        await _assert_by_key(worker, "job_attempts_settled_by_owner", keys, BATCH)
