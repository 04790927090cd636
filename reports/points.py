"""One measurement each: drain a backlog of no-op jobs, with its resource costs.

boundq drains through the real `boundq worker` command (so WORKER_PROCESSES works as it
would in production) against a fresh database on the same cluster; its throughput is
jobs / (last finished_at - first started_at), database clock, start-up excluded. While
it runs, its process tree's RSS and the database's connections are sampled (0.2 s).
Peers drain through reports.drain's children (their recommended setups, reports/peers.py).

Write costs per job: WAL bytes (pg_current_wal_lsn before and after; cluster-wide, so
other databases' writes count too) and dead tuples made (updates + deletes of the queue
tables from pg_stat_user_tables).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from boundq.core import dbadmin
from boundq.core.migrate import migrate
from boundq.reports.drain import BENCH_DB, fill_backlog, run_child
from boundq.reports.peers import setup_pgqueuer, setup_procrastinate

ROOT = Path(__file__).resolve().parent.parent
QUEUE_TABLES = {"boundq": ("jobs", "job_attempts"), "pgqueuer": ("pgqueuer", "pgqueuer_log"),
                "procrastinate": ("procrastinate_jobs", "procrastinate_events")}


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


def prepare(base: str, system: str, jobs: int) -> str:
    """A fresh database with `jobs` no-op jobs of `system` waiting, analyzed (as a queue
    table in service would be by autovacuum)."""
    url = dbadmin.fresh_database(base, BENCH_DB)
    if system == "pgqueuer":
        setup_pgqueuer(url, jobs)
    elif system == "procrastinate":
        setup_procrastinate(url, jobs)
    else:
        asyncio.run(migrate(url))
        fill_backlog(url, jobs)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return url


def _tree_rss_mb(proc: psutil.Process) -> float:
    try:
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20
    except psutil.Error:
        return 0.0


@contextlib.contextmanager
def worker_process(url: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`boundq worker` on `url` with `env` (NUM_WORKERS, MAX_CONCURRENT_JOBS, ...)."""
    child_env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning", **env,
                 "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "boundq", "worker"], cwd=ROOT,
                            env=child_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def wait_drained(url: str, proc: subprocess.Popen[bytes], timeout: float,
                 every: float = 0.2) -> tuple[float, int]:
    """Poll until no boundq job is waiting or running; returns (peak RSS MiB, peak
    connections) seen meanwhile."""
    watched = psutil.Process(proc.pid)
    peak_rss, peak_conns = 0.0, 0
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            peak_rss = max(peak_rss, _tree_rss_mb(watched))
            row = conn.execute(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid()), (SELECT count(*) FROM "
                "jobs WHERE status IN ('new', 'processing'))").fetchone()
            assert row is not None
            peak_conns = max(peak_conns, int(row[0]))
            if int(row[1]) == 0:
                return peak_rss, peak_conns
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                raise RuntimeError(f"boundq worker did not drain in time: {err}")
            time.sleep(every)


def drain_boundq(url: str, jobs: int, env: dict[str, str], timeout: float = 600
                 ) -> dict[str, Any]:
    """Run `boundq worker` with `env` until the backlog is gone."""
    with psycopg.connect(url, autocommit=True) as conn:
        before = WriteCounters.read(conn, QUEUE_TABLES["boundq"])
        with worker_process(url, env) as proc:
            peak_rss, peak_conns = wait_drained(url, proc, timeout)
        row = conn.execute("SELECT extract(epoch FROM max(finished_at) - min(started_at)) "
                           "FROM jobs").fetchone()
        seconds = float(row[0]) if row and row[0] else float("nan")
        time.sleep(0.6)  # let the stats of the worker's backends arrive
        costs = before.costs(conn, WriteCounters.read(conn, QUEUE_TABLES["boundq"]), jobs)
    return {"jobs_per_s": jobs / seconds, "elapsed_s": seconds, "peak_rss_mb": peak_rss,
            "peak_connections": peak_conns, **costs}


def drain_peer(url: str, system: str, jobs: int, consumers: int, batch: int = 50
               ) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        before = WriteCounters.read(conn, QUEUE_TABLES[system])
        result = run_child(url, system, jobs, workers=consumers, batch=batch)
        time.sleep(0.6)
        costs = before.costs(conn, WriteCounters.read(conn, QUEUE_TABLES[system]), jobs)
    # Not the child's ru_maxrss: Linux carries it over exec from this (large) process.
    return {"jobs_per_s": result["jobs_per_s"], "elapsed_s": result["elapsed_s"], **costs}
