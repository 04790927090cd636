"""Flow control: the settings of queues and kinds, validated, saved and read back.

A queue's settings: `concurrency` (jobs of the queue processing at once, across every
process and host; null = no limit), `rate_per_s` + `burst` (a token bucket: never more than
burst + rate_per_s x t jobs started in any window t; null rate = no limit), `weight` (its
share of the workers when queues compete, 1-100) and `paused`. A kind has the same minus
the weight. The limits are enforced by the database in the claim (boundq_claim_limited,
migration 0005); a change applies to every claim that begins after it was saved, and never
stops a job that is already running.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from boundq.core.errors import JobValidationError
from boundq.core.planner import FlowView
from boundq.core.queries import Q
from boundq.core.validation import check_queue_name

Conn = psycopg.AsyncConnection[Any]
Row = dict[str, Any]

MAX_CONCURRENCY = 1_000_000
MAX_RATE_PER_S = 1_000_000.0
MAX_BURST = 1_000_000
COUNT_CAP = 100_000  # live counts stop here (a count at the cap means at least)
FIELDS = frozenset({"concurrency", "rate_per_s", "burst", "weight", "paused"})


@dataclass(frozen=True, slots=True)
class FlowSettings:
    concurrency: int | None = None
    rate_per_s: float | None = None
    burst: int = 1
    weight: int = 1
    paused: bool = False

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate_per_s is not None or self.paused


def _int(body: Mapping[str, Any], field: str, lo: int, hi: int, default: int | None, *,
         nullable: bool) -> int | None:
    value = body.get(field, default)
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        orelse = ", or null" if nullable else ""
        raise JobValidationError(field, f"must be an integer between {lo} and {hi}{orelse}")
    return value


def parse_settings(body: Any, *, weighted: bool) -> FlowSettings:
    """A PUT body: every field optional (absent = the default: no limit, burst 1, weight 1,
    not paused); each bad field is named."""
    if not isinstance(body, Mapping):
        raise JobValidationError("body", "must be a JSON object")
    allowed = FIELDS if weighted else FIELDS - {"weight"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise JobValidationError(unknown[0], "is not a known field")
    rate = body.get("rate_per_s")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or not 0 < rate <= MAX_RATE_PER_S):
        raise JobValidationError("rate_per_s", f"must be a number above 0 and at most "
                                               f"{MAX_RATE_PER_S:g}, or null")
    paused = body.get("paused", False)
    if not isinstance(paused, bool):
        raise JobValidationError("paused", "must be true or false")
    burst = _int(body, "burst", 1, MAX_BURST, 1, nullable=False)
    weight = _int(body, "weight", 1, 100, 1, nullable=False) if weighted else 1
    return FlowSettings(_int(body, "concurrency", 0, MAX_CONCURRENCY, None, nullable=True),
                        None if rate is None else float(rate), burst or 1, weight or 1, paused)


def check_kind_name(name: str) -> str:
    if not 1 <= len(name) <= 100 or "\x00" in name:
        raise JobValidationError("name", "must be 1..100 characters without NUL")
    return name


async def put_queue(conn: Conn, name: str, settings: FlowSettings) -> tuple[Row, bool]:
    """Save a queue's settings; returns the queue as list_queues shows it, and whether it
    had no settings before."""
    check_queue_name(name, "name")
    created = await _put(conn, Q.job_queue_put, name, settings)
    return (await list_queues(conn, name))[0], created


async def put_kind(conn: Conn, name: str, settings: FlowSettings) -> tuple[Row, bool]:
    check_kind_name(name)
    created = await _put(conn, Q.job_kind_put, name, settings)
    return (await list_kinds(conn, name))[0], created


async def _put(conn: Conn, statement: Any, name: str, s: FlowSettings) -> bool:
    """Saved in one transaction (the connection is in autocommit); then, once it
    committed, the change is stamped effective: every claim that begins after that
    instant sees it."""
    cur = await conn.execute(statement, {"name": name, "concurrency": s.concurrency,
                                         "rate_per_s": s.rate_per_s, "burst": s.burst,
                                         "weight": s.weight, "paused": s.paused})
    row = await cur.fetchone()
    assert row is not None
    _, created, change_id = row
    await conn.execute(Q.job_limit_change_effective, {"id": change_id})
    return bool(created)


async def list_queues(conn: Conn, name: str | None = None) -> list[Row]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.job_queue_list, {"name": name, "cap": COUNT_CAP})
    return await cur.fetchall()


async def list_kinds(conn: Conn, name: str | None = None) -> list[Row]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(Q.job_kind_list, {"name": name, "cap": COUNT_CAP})
    return await cur.fetchall()


async def planner_news(conn: Conn) -> FlowView:
    """What the scout tells the claim planner."""
    cur = await conn.execute(Q.job_flow_settings)
    weights: dict[str, int] = {}
    paused: set[str] = set()
    limited: set[str] = set()
    kinds_limited = False
    for name, weight, is_paused, is_limited, any_kind in await cur.fetchall():
        kinds_limited = bool(any_kind)
        if name is None:
            continue
        weights[name] = int(weight)
        if is_paused:
            paused.add(name)
        if is_limited:
            limited.add(name)
    return FlowView(weights, frozenset(paused), frozenset(limited), kinds_limited)
