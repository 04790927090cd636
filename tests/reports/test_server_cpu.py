"""The drain's server CPU figure: read from /proc for the test cluster, living and
exited backends both counted."""

from __future__ import annotations

import os
import time

import psycopg

from boundq.core.pgembed import EmbeddedPostgres
from boundq.reports.dbwatch import wait_for_backends_to_exit
from boundq.reports.server_cpu import (
    PROC,
    parse_stat_times,
    postmaster_pid,
    server_cpu_seconds,
    stat_tail,
)

# A query that keeps one backend busy for a few tenths of a second.
BURN = "SELECT count(*) FROM generate_series(1, 4000000) AS g WHERE g % 7 = 3"


def test_stat_line_with_odd_command_name() -> None:
    fields = [str(n) for n in range(3, 53)]
    fields[1], fields[11:15] = "4242", ["10", "5", "100", "7"]
    line = "1234 (post (gres) x) " + " ".join(fields) + "\n"
    assert parse_stat_times(stat_tail(line)) == (4242, 15, 107)


def test_postmaster_of_the_local_cluster(pg_cluster: EmbeddedPostgres) -> None:
    pid_file = pg_cluster.data_dir / "postmaster.pid"
    expected = int(pid_file.read_text().splitlines()[0])
    assert postmaster_pid(pg_cluster.url("postgres")) == expected


def _own_cpu_seconds(pid: int) -> float:
    text = (PROC / str(pid) / "stat").read_text()
    return parse_stat_times(stat_tail(text))[1] / os.sysconf("SC_CLK_TCK")


def test_counts_a_backend_that_has_exited(db_url: str) -> None:
    url = db_url  # a database of its own: no other session's exit to wait for
    postmaster = postmaster_pid(url)
    assert postmaster is not None
    before = server_cpu_seconds(postmaster)
    started = time.process_time()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        conn.execute(BURN)
        burned = _own_cpu_seconds(row[0])  # the backend's own CPU, read while it lives
    wait_for_backends_to_exit(url)
    spent = server_cpu_seconds(postmaster) - before
    assert burned > 0.05, "the query kept its backend busy"
    # The backend is gone; its time is in the postmaster's reaped-children total (one
    # clock tick of slack for the rounding of two readings).
    assert spent >= burned - 0.011, (spent, burned)
    assert time.process_time() - started < burned  # the client did not do the work
