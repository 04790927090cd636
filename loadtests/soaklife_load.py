"""The moving parts of a soak-life run: the open-loop producer, the session that pins the
xmin horizon, and the `boundq worker` processes.

  Producer    a thread with its own connection: every TICK_S it inserts, in one plain
              INSERT INTO jobs (name, kind, payload), the jobs it owes so that the total
              is rate x elapsed whatever the workers do (a late tick sends what it owes);
              a share of them (fail_share) of kind `fail` with max_attempts 1, dead
              letters at once, so that FAILED_RETENTION_SECONDS has rows to delete
  XminPin     BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1; then idle in transaction:
              its snapshot holds the xmin horizon, so VACUUM can remove no row version
              that died after it, until released (ROLLBACK)
  WorkerSet   `boundq worker` processes with one environment (each in its own process
              group, as separate hosts would be), ready once each has its LISTEN session
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from subprocess import Popen
from typing import Any

import psycopg

from boundq.loadtests import processes as procs
from boundq.loadtests.soaklife_sample import connect

PRODUCER_APP = "boundq-soaklife-producer"
PRESSURE_APP = "boundq-soaklife-pressure"
TICK_S = 0.1
PRODUCE = """
WITH failing AS (
    INSERT INTO jobs (name, kind, payload, max_attempts)
    SELECT 'soak-life', 'fail', '{"times": 1}'::jsonb, 1 FROM generate_series(1, %(failing)s)
)
INSERT INTO jobs (name, kind, payload)
SELECT 'soak-life', %(kind)s, %(payload)s::jsonb FROM generate_series(1, %(n)s)
"""


def job_of(job_ms: int) -> tuple[str, str]:
    """The run's job: noop, or a `sleep` of job_ms."""
    return ("sleep", json.dumps({"ms": job_ms})) if job_ms > 0 else ("noop", "{}")


class Producer(threading.Thread):
    def __init__(self, url: str, rate: float, job_ms: int = 0, fail_share: float = 0.0
                 ) -> None:
        super().__init__(name="soak-life-producer", daemon=True)
        self.url, self.rate, self.fail_share = url, rate, fail_share
        self.kind, self.payload = job_of(job_ms)
        self.sent = 0
        self.failing = 0  # of them, `fail` jobs
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        started = time.monotonic()
        while not self._halt.is_set():
            due = int(self.rate * (time.monotonic() - started)) - self.sent
            if due > 0:
                failing = int((self.sent + due) * self.fail_share) - self.failing
                try:
                    conn = conn or connect(self.url, PRODUCER_APP)
                    conn.execute(PRODUCE, {"kind": self.kind, "payload": self.payload,
                                           "n": due - failing, "failing": failing})
                    self.sent += due
                    self.failing += failing
                except psycopg.Error as exc:  # counted as not sent; the next tick retries
                    self.errors.append(f"{type(exc).__name__}: {exc}".strip()[:300])
                    if conn is not None:
                        conn.close()
                    conn = None
            self._halt.wait(TICK_S)
        if conn is not None:
            conn.close()

    def stop(self) -> int:
        self._halt.set()
        self.join(30)
        return self.sent


class XminPin:
    """One idle-in-transaction session. The embedded cluster ends such sessions after
    idle_in_transaction_session_timeout (60 s): this one turns the timeout off for itself."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection[Any] | None = None
        self.backend_xmin: str | None = None
        self.held_since = 0.0

    def hold(self) -> str:
        conn = psycopg.connect(self.url, autocommit=True, application_name=PRESSURE_APP)
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT 1")
        row = conn.execute("SELECT backend_xmin::text FROM pg_stat_activity "
                           "WHERE pid = pg_backend_pid()").fetchone()
        self.conn, self.held_since = conn, time.monotonic()
        self.backend_xmin = row[0] if row else None
        return f"xmin horizon pinned at {self.backend_xmin} (idle in transaction)"

    def release(self) -> str:
        """ROLLBACK and close; says how long the pin held, or that the server ended it."""
        conn, self.conn = self.conn, None
        if conn is None:
            return "no pin held"
        held = time.monotonic() - self.held_since
        try:
            conn.execute("ROLLBACK")
            text = f"xmin horizon released after {held:.0f} s"
        except psycopg.Error as exc:
            text = (f"the pinning session was already gone after {held:.0f} s "
                    f"({type(exc).__name__}: {str(exc).strip()[:200]})")
        conn.close()
        return text


class WorkerSet:
    """`processes` `boundq worker --processes 1` children with one environment."""

    def __init__(self, env: dict[str, str], log_path: Path, processes: int) -> None:
        self.env, self.log_path, self.count = env, log_path, processes
        self.procs: list[Popen[bytes]] = []

    def start(self) -> WorkerSet:
        self.procs = [procs.start_worker(self.env, self.log_path) for _ in range(self.count)]
        return self

    def exited(self) -> list[int]:
        return [p.returncode for p in self.procs if p.poll() is not None]

    def stop(self, timeout: float = 60) -> list[int | None]:
        return [procs.stop(p, timeout=timeout) for p in self.procs]


LISTENERS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'boundq-listener'
"""


def wait_listening(conn: psycopg.Connection[Any], workers: WorkerSet, expected: int,
                   timeout: float = 90) -> None:
    """Until `expected` worker processes of the database LISTEN (each opens that session
    once its loops run); raise if one of `workers` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if workers.exited():
            raise RuntimeError(f"boundq worker exited with {workers.exited()} before it was "
                               f"ready; see {workers.log_path.name}")
        row = conn.execute(LISTENERS).fetchone()
        if row is not None and row[0] >= expected:
            return
        time.sleep(0.1)
    raise RuntimeError(f"boundq worker was not listening within {timeout:.0f}s")
