"""Small helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.rows import dict_row

from boundq.core import queue
from boundq.core.handlers import Registry, default_registry
from boundq.core.validation import JobSpec, validate_job
from tests.conftest import fast_settings

REPO_ROOT = Path(__file__).resolve().parent.parent
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def placeholders(sql: str) -> list[str]:
    """Named %(x)s placeholders in order of first appearance (psycopg numbers them so)."""
    order: list[str] = []
    for name in _PLACEHOLDER.findall(sql):
        if name not in order:
            order.append(name)
    return order


def as_prepared(sql: str) -> str:
    """The query as PostgreSQL sees it from psycopg: %(x)s turned into $n."""
    order = placeholders(sql)
    return _PLACEHOLDER.sub(lambda m: f"${order.index(m[1]) + 1}", sql)


def spec(name: str = "job", registry: Registry | None = None, **fields: Any) -> JobSpec:
    return validate_job({"name": name, **fields}, registry or default_registry, fast_settings())


async def add_jobs(conn, n: int, registry: Registry | None = None, **fields: Any) -> list[int]:
    """Enqueue n jobs with the same fields through the real enqueue path."""
    return await queue.enqueue_many(conn, [spec(f"job-{i}", registry, **fields) for i in range(n)])


async def add_job(conn, **fields: Any) -> int:
    row, created = await queue.enqueue(conn, spec(fields.pop("name", "job"), **fields))
    assert created
    return int(row["id"])


async def rows(conn, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(sql, params)
    return await cur.fetchall()


async def scalar(conn, sql: str, params: Any = None) -> Any:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    assert row is not None
    return row[0]


async def job(conn, job_id: int) -> dict[str, Any]:
    return await queue.get_job(conn, job_id)


async def attempts(conn, job_id: int) -> list[dict[str, Any]]:
    return await queue.job_attempts(conn, job_id)


Claimed = queue.ClaimedRow


def claimed_row(job_id: int, attempt: int = 1, kind: str = "noop", payload: Any = None
                ) -> queue.ClaimedRow:
    """A claim as job_complete_and_claim returns it, for handing to Worker.spawn directly."""
    now = datetime.now(UTC)
    return queue.ClaimedRow(job_id, attempt, kind, "default", payload or {}, None, now, now,
                            0.0, now)


async def claim(conn, owner: str = "owner-a", limit: int = 1, lease_s: float = 30.0,
                queue_name: str = "default") -> list[Claimed]:
    return await queue.claim(conn, owner, limit, lease_s, queue_name)


async def claim_one(conn, owner: str = "owner-a", lease_s: float = 30.0) -> Claimed:
    claimed = await claim(conn, owner, 1, lease_s)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def expire_leases(conn, ids: Iterable[int] | None = None) -> None:
    """Make leases of processing jobs expire now (by the database clock)."""
    if ids is None:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 millisecond' "
            "WHERE status = 'processing'"
        )
    else:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 millisecond' "
            "WHERE status = 'processing' AND id = ANY(%s)",
            (list(ids),),
        )


async def wait_until(
    check: Callable[[], Awaitable[Any]], within: float, interval: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)


async def status_counts(conn) -> dict[str, int]:
    return await queue.count_by_status(conn)


def max_overlap(intervals: Iterable[tuple[Any, Any]]) -> int:
    """Most intervals open at one instant; an end at t closes before a start at t opens.
    An interval with end None is open until the end of time."""
    events: list[tuple[Any, int]] = []
    for start, end in intervals:
        events.append((start, 1))
        if end is not None:
            events.append((end, -1))
    events.sort(key=lambda e: (e[0], e[1]))
    open_now = best = 0
    for _, delta in events:
        open_now += delta
        best = max(best, open_now)
    return best


# --- EXPLAIN (FORMAT JSON) plans ------------------------------------------------------------

def plan_nodes(plan: dict[str, Any]) -> Iterable[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def plan_rows_read(plan: dict[str, Any], relation: str | None = None) -> int:
    """Rows the plan's scans produced plus rows it threw away, over all loops; only scans
    of `relation` count as reads when it is given."""
    total = 0.0
    for node in plan_nodes(plan):
        loops = node.get("Actual Loops", 1)
        for key in ("Rows Removed by Filter", "Rows Removed by Join Filter",
                    "Rows Removed by Index Recheck"):
            total += node.get(key, 0) * loops
        scanned = node.get("Relation Name")
        if scanned and (relation is None or scanned == relation) \
                and node["Node Type"] != "ModifyTable":
            total += node.get("Actual Rows", 0) * loops
    return int(total)
