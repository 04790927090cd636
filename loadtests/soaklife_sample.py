"""What a soak-life run reads from the database after each interval, and only from there
(never from a process's counters), on the server's clock:

  completions   rows whose finished_at falls in the interval, read as the run goes in
                slices of at most SLICE_S seconds, each `settle` seconds after it ends (so
                statements that were committing at its end are in)
  pickup        started_at - run_at of those rows that finished on their first attempt:
                the time from enqueue to claim (p50, p99 as percentile_cont, max), over
                the interval's slices together
  sizes         pg_total_relation_size / pg_relation_size / pg_indexes_size of jobs,
                job_attempts and job_tallies, and of the claim and finished-row indexes
  vacuum        n_live_tup, n_dead_tup, autovacuum_count, last_autovacuum of each table
  history       rows in a terminal state, from the tallies (what /stats reads)
  horizon       the oldest backend_xmin / backend_xid of the database as an age in
                transactions, and the oldest open transaction in seconds

Every query here walks an index range of one interval, or reads catalogs and statistics:
its cost does not grow with the history it measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

TABLES = ("jobs", "job_attempts", "job_tallies")
INDEXES = ("jobs_claim_idx", "jobs_finished_idx", "jobs_pkey")

# Rows finished in [a, b): through jobs_finished_idx (finished_at) WHERE finished_at IS
# NOT NULL, the slice's rows only. Pickup is judged on first attempts (a job handed back at
# a worker's shutdown and claimed again waited for other reasons).
#
# Read in slices as the run goes, not once per interval: one statement over a whole
# minute's rows (218k at 3,640 jobs/s; 0.4 s and 22k buffers when run by hand) ran five
# seconds into the minute it measured, and in a 30-minute run the second in which it ran
# had the highest pickup p99 of the minute (median over the minutes 42 ms, most seconds
# 20-27 ms). A slice reads a twelfth of the rows, while their pages are still in shared
# buffers, spread over the minute.
SLICE_S = 5.0
FINISHED_SLICE = """
SELECT count(*),
       coalesce(array_agg(extract(epoch FROM started_at - run_at)::float8)
                FILTER (WHERE attempts = 1), '{}')
FROM jobs
WHERE finished_at IS NOT NULL AND finished_at >= %(a)s AND finished_at < %(b)s
"""

TABLE_STATS = """
SELECT s.relname, pg_total_relation_size(s.relid), pg_relation_size(s.relid),
       pg_indexes_size(s.relid), s.n_live_tup, s.n_dead_tup, s.autovacuum_count,
       s.last_autovacuum, s.autoanalyze_count
FROM pg_stat_user_tables s
WHERE s.schemaname = current_schema() AND s.relname = ANY(%(tables)s)
"""

INDEX_SIZES = """
SELECT name, pg_relation_size(to_regclass(name)) FROM unnest(%(indexes)s::text[]) AS name
"""

# `new` rows through the claim index. After a pinned horizon that walk reads every entry
# the pin kept, dead, which the workers' claim floors skip: in an hour's soak the reading
# as the pin's last interval ended took 1.7 s longer than before the pin, its session on
# a core, in the first seconds of the release's minute. So it runs under a deadline of
# its own (`waiting_deadline_s`); past it `waiting` is left empty rather than the load
# measured being slowed by its observer.
WAITING = "SELECT count(*) FROM jobs WHERE status = 'new'"
# Running rows through jobs_running_idx; terminal rows from the tallies.
PROCESSING_FINISHED = """
SELECT (SELECT count(*) FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NULL),
       (SELECT coalesce(sum(success_n + failed_n + cancelled_n), 0) FROM job_tallies)
"""
# The drain's check, without a deadline of its own: nothing waiting, nothing running.
QUEUE = """
SELECT (SELECT count(*) FROM jobs WHERE status = 'new'),
       (SELECT count(*) FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NULL)
"""

# The horizon VACUUM must respect in this database: the oldest snapshot (backend_xmin) or
# transaction id (backend_xid) any session holds, as an age in transactions; and how long
# the oldest open transaction has been open. This session's own is left out.
HORIZON = """
SELECT coalesce(max(greatest(age(backend_xmin), age(backend_xid))), 0),
       coalesce(extract(epoch FROM clock_timestamp() - min(xact_start)), 0)
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
"""

# Time-series columns, in CSV order (the run adds interval, phase, t_start_s, t_end_s,
# offered and event in front).
SAMPLE_COLUMNS = (
    "completions", "completions_per_s", "pickup_n", "pickup_p50_ms", "pickup_p99_ms",
    "pickup_max_ms", "waiting", "processing", "finished_rows",
    *(f"{t}_{c}" for t in TABLES for c in ("total_bytes", "heap_bytes", "index_bytes",
                                           "live_tup", "dead_tup", "autovacuum_count",
                                           "last_autovacuum", "autoanalyze_count")),
    *(f"{i}_bytes" for i in INDEXES),
    "xmin_age", "oldest_xact_s", "sampled_at",
)


def connect(url: str, app: str) -> psycopg.Connection[Any]:
    """A connection of the run itself: autocommit (it never holds a snapshot between
    statements) and a statement deadline (a reading never hangs the run)."""
    conn = psycopg.connect(url, autocommit=True, application_name=app)
    conn.execute("SET statement_timeout = '60s'")
    return conn


def server_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds) * 1000, 3)


def percentile_cont(ordered: Sequence[float], q: float) -> float:
    """PostgreSQL's percentile_cont over sorted values: linear between the two ranks
    around q x (n - 1)."""
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


@dataclass
class FinishedTally:
    """One interval's finished rows, added slice by slice: how many, and the pickup (in
    seconds) of each that finished on its first attempt."""

    completions: int = 0
    pickups: list[float] = field(default_factory=list)

    def read(self, conn: psycopg.Connection[Any], start: datetime, end: datetime) -> None:
        row = conn.execute(FINISHED_SLICE, {"a": start, "b": end}, binary=True).fetchone()
        assert row is not None
        self.completions += int(row[0])
        self.pickups.extend(float(x) for x in row[1])

    def values(self, seconds: float) -> dict[str, Any]:
        ordered = sorted(self.pickups)
        p50 = percentile_cont(ordered, 0.5) if ordered else None
        p99 = percentile_cont(ordered, 0.99) if ordered else None
        return {"completions": self.completions,
                "completions_per_s": (round(self.completions / seconds, 2) if seconds > 0
                                      else None),
                "pickup_n": len(ordered), "pickup_p50_ms": _ms(p50),
                "pickup_p99_ms": _ms(p99), "pickup_max_ms": _ms(ordered[-1] if ordered
                                                               else None)}


def read_waiting(conn: psycopg.Connection[Any], deadline_s: float) -> int | None:
    """The `new` rows, or None when counting them takes over `deadline_s`."""
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %(ms)s, true)",
                         {"ms": str(max(1, round(deadline_s * 1000)))})
            row = conn.execute(WAITING).fetchone()
    except psycopg.errors.QueryCanceled:
        return None
    assert row is not None
    return int(row[0])


def read_state(conn: psycopg.Connection[Any], waiting_deadline_s: float) -> dict[str, Any]:
    """Sizes, vacuum statistics, the queue and the horizon, as of now."""
    out: dict[str, Any] = {}
    for (name, total, heap, index, live, dead, autovacuums, last, analyzes) in conn.execute(
            TABLE_STATS, {"tables": list(TABLES)}).fetchall():
        out.update({f"{name}_total_bytes": total, f"{name}_heap_bytes": heap,
                    f"{name}_index_bytes": index, f"{name}_live_tup": live,
                    f"{name}_dead_tup": dead, f"{name}_autovacuum_count": autovacuums,
                    f"{name}_last_autovacuum": last.isoformat() if last else "",
                    f"{name}_autoanalyze_count": analyzes})
    for name, size in conn.execute(INDEX_SIZES, {"indexes": list(INDEXES)}).fetchall():
        out[f"{name}_bytes"] = size
    out["waiting"] = read_waiting(conn, waiting_deadline_s)
    row = conn.execute(PROCESSING_FINISHED).fetchone()
    assert row is not None
    out.update(processing=int(row[0]), finished_rows=int(row[1]))
    row = conn.execute(HORIZON).fetchone()
    assert row is not None
    out.update(xmin_age=int(row[0]), oldest_xact_s=round(float(row[1]), 1))
    out["sampled_at"] = server_now(conn).isoformat()
    return out


def sample(finished: FinishedTally, seconds: float, state: dict[str, Any]
           ) -> dict[str, Any]:
    """One interval's row: its completions and pickup, and the state read at its end."""
    values = finished.values(seconds) | state
    return {column: values.get(column) for column in SAMPLE_COLUMNS}


def queue_empty(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(QUEUE).fetchone()
    return row is not None and row[0] == 0 and row[1] == 0
