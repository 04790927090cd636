"""What the benchmarks read while a queue works: its sessions, never the report's own."""

from __future__ import annotations

from contextlib import ExitStack

import psycopg

from boundq.reports import dbwatch


def test_sessions_leave_out_the_reports_own_connections(db_url: str) -> None:
    with ExitStack() as stack:
        watcher = stack.enter_context(dbwatch.connect(db_url))
        for _ in range(2):  # the report's other connections (write counters, producers)
            stack.enter_context(dbwatch.connect(db_url))
        assert dbwatch.sessions(watcher) == 0
        for name in ("boundq-worker", "boundq-listener", ""):  # the queue's, and an unnamed one
            stack.enter_context(psycopg.connect(db_url, autocommit=True, application_name=name))
        assert dbwatch.sessions(watcher) == 3


def test_work_left_and_the_first_n_jobs(db_url: str) -> None:
    with dbwatch.connect(db_url) as conn:
        assert not dbwatch.boundq_work_left(conn)
        conn.execute("INSERT INTO jobs (name) SELECT 'j' FROM generate_series(1, 5)")
        assert dbwatch.boundq_work_left(conn)
        assert dbwatch.boundq_work_left(conn, first_n=2)
        # the first two finish (as a worker would leave them): only the rest is left
        conn.execute("UPDATE jobs SET status = 'processing', attempts = 1, started_at = now(), "
                     "lease_owner = 'w', lease_expires_at = now() + interval '1 min' "
                     "WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT 2)")
        assert dbwatch.boundq_work_left(conn, first_n=2)
        conn.execute("UPDATE jobs SET status = 'success', finished_at = now(), "
                     "lease_owner = NULL, lease_expires_at = NULL WHERE status = 'processing'")
        assert not dbwatch.boundq_work_left(conn, first_n=2)
        assert dbwatch.boundq_work_left(conn)
        assert dbwatch.boundq_finished(conn) == 2
