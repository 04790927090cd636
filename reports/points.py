"""One point of `boundq report`: drain a backlog of no-op jobs, with its resource costs.

boundq drains through the real `boundq worker` command (so WORKER_PROCESSES works as it
would in production), peers through their benchmark children (their recommended setups,
reports/peers.py), each against a fresh database on the same cluster, timed by the
database from the first claim to the last finish, with the drain's peak RSS and its peak
connections (the report's own left out) sampled every 0.2 s (reports/drain_run.py).

Write costs per job: WAL bytes (pg_current_wal_lsn before and after; cluster-wide, so
other databases' writes count too) and dead tuples made (updates + deletes of the queue
tables from pg_stat_user_tables).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg

from boundq.reports import dbwatch
from boundq.reports.drain_run import drain_child, drain_cli

QUEUE_TABLES = {"boundq": ("jobs", "job_attempts"), "pgqueuer": ("pgqueuer", "pgqueuer_log"),
                "procrastinate": ("procrastinate_jobs", "procrastinate_events")}
STATS_SETTLE_S = 0.6  # the drained backends' statistics reach pg_stat_user_tables


@dataclass
class WriteCounters:
    wal_lsn: str
    tuples_dead: int

    @classmethod
    def read(cls, conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> WriteCounters:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT pg_current_wal_lsn()::text, coalesce(sum(n_tup_upd + n_tup_del), 0) "
            "FROM pg_stat_user_tables WHERE relname = ANY(%s)", (list(tables),)).fetchone()
        assert row is not None
        return cls(str(row[0]), int(row[1]))

    def costs(self, conn: psycopg.Connection[Any], after: WriteCounters, jobs: int
              ) -> dict[str, float]:
        row = conn.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)",
                           (after.wal_lsn, self.wal_lsn)).fetchone()
        wal = float(row[0]) if row else 0.0
        return {"wal_bytes_per_job": wal / jobs,
                "dead_tuples_per_job": (after.tuples_dead - self.tuples_dead) / jobs}


def _with_costs(url: str, system: str, jobs: int, drain: Any) -> dict[str, Any]:
    with dbwatch.connect(url) as conn:
        before = WriteCounters.read(conn, QUEUE_TABLES[system])
        result: dict[str, Any] = drain()
        time.sleep(STATS_SETTLE_S)
        costs = before.costs(conn, WriteCounters.read(conn, QUEUE_TABLES[system]), jobs)
    return {**result, **costs}


def drain_boundq(url: str, jobs: int, env: dict[str, str], timeout: float = 600
                 ) -> dict[str, Any]:
    """Run `boundq worker` with `env` until the backlog is gone."""
    out = _with_costs(url, "boundq", jobs,
                      lambda: drain_cli(url, env, timeout_s=timeout, show_progress=False))
    return {k: out[k] for k in ("jobs_per_s", "elapsed_s", "peak_rss_mb", "peak_connections",
                                "client_cpu_s", "wal_bytes_per_job", "dead_tuples_per_job")}


def drain_peer(url: str, system: str, jobs: int, consumers: int, batch: int = 50
               ) -> dict[str, Any]:
    out = _with_costs(url, system, jobs,
                      lambda: drain_child(url, system, jobs, workers=consumers, batch=batch))
    return {k: out[k] for k in ("jobs_per_s", "elapsed_s", "peak_rss_mb", "peak_connections",
                                "client_cpu_s", "wal_bytes_per_job", "dead_tuples_per_job")}
