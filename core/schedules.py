"""Schedule statements: one function per block of core/sql/schedules.sql.

Every function takes an autocommit AsyncConnection. The clock that decides what is due is
the database's `now()`; croniter (core/cron.py) only says when the ticks are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from boundq.core.cron import Cron, ScheduleSpec, parse_zone
from boundq.core.queries import Q

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]
RECENT_TICKS = 20


async def db_now(conn: Conn) -> datetime:
    cur = await conn.execute(Q.schedule_clock)
    row = await cur.fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


async def put(conn: Conn, spec: ScheduleSpec) -> tuple[Row, bool]:
    """Create or replace; returns (schedule, created). A new expression starts at its first
    tick after the database's now; the same expression and zone keep their watermark."""
    first = spec.cron.next_after(await db_now(conn))
    job = spec.job
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.schedule_put, {
        "name": spec.name, "cron": spec.cron.expr, "timezone": spec.timezone,
        "job": Jsonb(spec.template), "catch_up": spec.catch_up, "kind": job.kind,
        "queue": job.queue, "payload": job.payload_json, "priority": job.priority,
        "max_attempts": job.max_attempts, "timeout_s": job.timeout_s, "delay_s": job.delay_s,
        "next_tick_at": first})
    row = await cur.fetchone()
    assert row is not None
    created = bool(row.pop("created"))
    return row, created


async def get(conn: Conn, name: str, recent: int = RECENT_TICKS) -> Row | None:
    """One schedule with its most recent ticks (newest first), or None."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.schedule_get, {"name": name})
    row = await cur.fetchone()
    if row is None:
        return None
    await cur.execute(Q.schedule_ticks_recent, {"name": name, "limit": recent})
    row["recent_ticks"] = await cur.fetchall()
    return row


async def list_all(conn: Conn) -> list[Row]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.schedule_list)
    return await cur.fetchall()


async def delete(conn: Conn, name: str) -> bool:
    cur = await conn.execute(Q.schedule_delete, {"name": name})
    return await cur.fetchone() is not None


@dataclass(frozen=True, slots=True)
class Due:
    """A schedule whose watermark was due when the database's clock read `db_now`."""

    name: str
    cron: str
    timezone: str
    catch_up: int
    version: int
    next_tick_at: datetime
    db_now: datetime


async def due(conn: Conn, limit: int) -> list[Due]:
    cur = await conn.execute(Q.schedule_due, {"limit": limit})
    return [Due(*row) for row in await cur.fetchall()]


async def next_due_in(conn: Conn) -> float | None:
    """Seconds until the earliest watermark (<= 0: due now); None without schedules."""
    cur = await conn.execute(Q.schedule_next_due)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


@dataclass(frozen=True, slots=True)
class Fire:
    """What handling a due schedule writes: jobs for `ticks` (the latest catch_up due ones,
    oldest first), the ticks before them since `window_start` skipped, and the watermark
    moved from `window_start` to `next_tick_at` (the first tick after the clock read)."""

    name: str
    version: int
    window_start: datetime
    ticks: tuple[datetime, ...]
    next_tick_at: datetime


def plan(d: Due) -> Fire:
    """The fire for a due schedule (croniter only; raises core.cron.CronError)."""
    cron = Cron(d.cron, parse_zone(d.timezone))
    ticks = cron.latest(d.next_tick_at, d.db_now, d.catch_up)
    return Fire(d.name, d.version, d.next_tick_at, tuple(ticks), cron.next_after(d.db_now))


@dataclass(frozen=True, slots=True)
class Fired:
    won: bool  # False: another scheduler, a PUT or a DELETE came first; nothing written
    ticks: tuple[datetime, ...]  # the ticks that made a job, with the job's id
    job_ids: tuple[int, ...]
    pruned: int


async def fire(conn: Conn, f: Fire, keep: int) -> Fired:
    """Handle the due ticks in one statement (schedule_fire); `keep` tick rows stay."""
    cur = await conn.execute(Q.schedule_fire, {
        "name": f.name, "version": f.version, "window_start": f.window_start,
        "ticks": list(f.ticks), "next_tick_at": f.next_tick_at, "keep": keep})
    row = await cur.fetchone()
    assert row is not None
    won, ticks, job_ids, pruned = row
    return Fired(bool(won), tuple(ticks), tuple(job_ids), int(pruned))
