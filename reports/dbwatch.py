"""What the benchmarks read from the database while and after a queue works: the sessions
of the queue under test (never the report's own), whether work is left, and when the
first job was claimed and the last one finished, on the server's clock.

The report's own connections carry application_name REPORT_APP so that counting the
connections a queue opens leaves them out (they are not the queue's budget).
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

REPORT_APP = "boundq-report"

# Client sessions on this database, autovacuum and other background workers excluded,
# and the report's own excluded by name.
SESSIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND application_name IS DISTINCT FROM %(report_app)s
"""

# boundq: has the last job of the backlog (or of its first n) finished? A primary-key
# lookup: polled every 0.2 s, it must cost the server nothing beside the drain. The fill
# gives every job one run_at, so jobs are claimed in id order and this is the last to go
# (a fast "not yet"; WORK_LEFT then checks the rest).
BOUNDQ_LAST_UNFINISHED = """
SELECT finished_at IS NULL FROM jobs
WHERE id = coalesce((SELECT min(id) FROM jobs) + %(n)s - 1, (SELECT max(id) FROM jobs))
"""

# boundq: is any job still waiting or running? Each EXISTS stops at its first row.
BOUNDQ_WORK_LEFT = """
SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'new')
    OR EXISTS (SELECT 1 FROM jobs WHERE status = 'processing')
"""

# boundq, when only the first `n` jobs of a larger backlog are to be drained (ids follow
# the fill, which is also the claim order: one run_at, then id).
BOUNDQ_FIRST_N_LEFT = """
SELECT count(*) < %(n)s FROM jobs
WHERE id < (SELECT min(id) FROM jobs) + %(n)s AND finished_at IS NOT NULL
"""

BOUNDQ_FINISHED = "SELECT count(*) FROM jobs WHERE finished_at IS NOT NULL"

# (jobs finished, seconds from the first claim to the last finish) on the server's clock,
# from each system's own records: boundq's jobs rows (the naive loop writes the same
# columns), PgQueuer's log (picked / successful rows), procrastinate's events.
DRAIN_SPAN = {
    "boundq": """
SELECT count(*) FILTER (WHERE status = 'success'),
       extract(epoch FROM max(finished_at) - min(started_at))
FROM jobs WHERE finished_at IS NOT NULL
""",
    "pgqueuer": """
SELECT count(*) FILTER (WHERE status = 'successful'),
       extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                        - min(created) FILTER (WHERE status = 'picked'))
FROM pgqueuer_log
""",
    "procrastinate": """
SELECT count(*) FILTER (WHERE type = 'succeeded'),
       extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')
                        - min(at) FILTER (WHERE type = 'started'))
FROM procrastinate_events
""",
}


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection of the report itself (left out of SESSIONS)."""
    return psycopg.connect(url, autocommit=True, application_name=REPORT_APP)


def sessions(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(SESSIONS, {"report_app": REPORT_APP}).fetchone()
    return int(row[0]) if row else 0


def boundq_work_left(conn: psycopg.Connection[Any], first_n: int | None = None) -> bool:
    row = conn.execute(BOUNDQ_LAST_UNFINISHED, {"n": first_n}).fetchone()
    if row is not None and row[0]:
        return True
    if first_n is None:
        row = conn.execute(BOUNDQ_WORK_LEFT).fetchone()
    else:
        row = conn.execute(BOUNDQ_FIRST_N_LEFT, {"n": first_n}).fetchone()
    return bool(row and row[0])


def boundq_finished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(BOUNDQ_FINISHED).fetchone()
    return int(row[0]) if row else 0


def drain_span(conn: psycopg.Connection[Any], system: str) -> tuple[int, float]:
    """(jobs finished successfully, seconds from first claim to last finish)."""
    row = conn.execute(DRAIN_SPAN[system]).fetchone()
    if row is None or row[1] is None:
        return (int(row[0]) if row else 0), float("nan")
    return int(row[0]), float(row[1])


def wait_for_backends_to_exit(url: str, timeout_s: float = 10.0) -> None:
    """A child has exited; its backends exit a moment later. Wait until they have (so
    that a server CPU reading counts all of their time), polling every 50 ms."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connect(url) as conn:
            if sessions(conn) == 0:
                return
        time.sleep(0.05)
