"""Open-loop producers: jobs arrive at a fixed rate whatever the consumers do.

`open_loop` calls insert(n) every 20 ms tick so that the jobs sent total rate x elapsed
(a tick that ran late sends the ones it owes). `produce` does it with plain SQL inserts
into each system's own table, the same way for every system, so that no client library's
enqueue path is part of the comparison:

  boundq         INSERT INTO jobs (name, kind, payload): a plain row is a runnable job
  pgqueuer       INSERT INTO pgqueuer, plus its 'queued' log row (as its enqueue writes it)
  procrastinate  INSERT INTO procrastinate_jobs (its triggers log the 'deferred' event
                 and notify the workers)

Each batch is one statement (generate_series) in its own transaction. The window of the
run is read from the server's clock, like the consumers' timestamps it is compared with.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from boundq.reports.dbwatch import REPORT_APP

TICK_S = 0.02

PRODUCE = {
    "boundq": """
INSERT INTO jobs (name, kind, payload)
SELECT 'load', 'sleep', %(payload)s::jsonb FROM generate_series(1, %(n)s)
""",
    "pgqueuer": """
WITH inserted AS (
    INSERT INTO pgqueuer (priority, entrypoint, payload, status)
    SELECT 0, 'sleep', convert_to(%(payload)s, 'UTF8'), 'queued'
    FROM generate_series(1, %(n)s)
    RETURNING id, entrypoint, priority, created
)
INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority, created)
SELECT id, 'queued', entrypoint, priority, created FROM inserted
""",
    "procrastinate": """
INSERT INTO procrastinate_jobs (queue_name, task_name, args)
SELECT 'bench', 'sleep', %(payload)s::jsonb FROM generate_series(1, %(n)s)
""",
}


async def open_loop(rate: float, seconds: float, insert: Callable[[int], Awaitable[None]]
                    ) -> int:
    """Call insert(n) each tick so that n totals rate x elapsed; returns jobs inserted."""
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            await insert(due)
            sent += due
        await asyncio.sleep(TICK_S)
    if (due := int(rate * seconds) - sent) > 0:
        await insert(due)
        sent += due
    return sent


@dataclass
class Produced:
    sent: int
    started_at: datetime  # server clock, before the first insert
    ended_at: datetime  # server clock, after the last insert commits

    @property
    def seconds(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()


def sleep_payload(job_ms: int) -> str:
    return json.dumps({"ms": job_ms})


async def produce(system: str, url: str, rate: float, seconds: float, job_ms: int
                  ) -> Produced:
    """Insert `system`'s sleep jobs at `rate` per second for `seconds`."""
    params = {"payload": sleep_payload(job_ms)}
    async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name=REPORT_APP) as conn:
        async def insert(n: int) -> None:
            await conn.execute(PRODUCE[system], {**params, "n": n})

        started = await _clock(conn)
        sent = await open_loop(rate, seconds, insert)
        return Produced(sent, started, await _clock(conn))


async def insert_once(system: str, url: str, n: int, job_ms: int) -> None:
    async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name=REPORT_APP) as conn:
        await conn.execute(PRODUCE[system], {"payload": sleep_payload(job_ms), "n": n})


async def _clock(conn: psycopg.AsyncConnection[Any]) -> datetime:
    row = await (await conn.execute("SELECT clock_timestamp()")).fetchone()
    assert row is not None
    value = row[0]
    assert isinstance(value, datetime)
    return value
