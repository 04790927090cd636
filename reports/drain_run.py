"""One measured drain: a fresh database holding a backlog, a queue's process draining it,
watched from the database every 0.2 s and timed by the database.

  elapsed   first claim to last finish on the server's clock, from the system's own
            records (reports/dbwatch.py): start-up and shutdown are not in it
  CPU       the drain process's tree, start to exit (wait4; reports/procwatch.py)
  memory    peak RSS of that tree (VmHWM, sampled)
  sessions  peak connections it held (the report's own left out)

boundq drains through `boundq worker`, the command users run: it is sent SIGTERM once
the database shows no job waiting or running. Every other drain is a child of
reports/drain_children.py that exits when it is done. Children run in the caller's
directory and import the caller's boundq (core/children.py), installed or a checkout.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import psycopg

from boundq.core import dbadmin
from boundq.core.children import child_env
from boundq.core.migrate import migrate
from boundq.reports import dbwatch
from boundq.reports.drain_kinds import payload_text, store_module
from boundq.reports.peers import setup_pgqueuer, setup_procrastinate
from boundq.reports.procwatch import reap, reap_nowait, tree_peak_rss_mb

BENCH_DB = "boundq_bench"
WATCH_EVERY_S = 0.2
PROGRESS_EVERY_S = 5.0
STOP_GRACE_S = 60.0
# Whose records time a drain (reports/dbwatch.py DRAIN_SPAN).
SYSTEM_OF = {"boundq": "boundq", "in-process": "boundq", "naive": "boundq",
             "pgqueuer": "pgqueuer", "procrastinate": "procrastinate"}


def fill_backlog(url: str, jobs: int, kind: str = "noop") -> None:
    """COPY `jobs` jobs of `kind` in (one transaction: one run_at, claimed in id order);
    a kind other than noop gets its payload and, for wasm, its module first
    (reports/drain_kinds.py)."""
    if kind == "wasm":
        store_module(url)
    row = ("bench", kind, payload_text(kind))
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(
        "COPY jobs (name, kind, payload) FROM STDIN"
    ) as copy:
        for _ in range(jobs):
            copy.write_row(row)


COPY_DELAYED_AS_BOUNDQ = "COPY jobs (name, kind, priority, run_at, status) FROM STDIN"
COPY_DELAYED_PLAIN = "COPY jobs (name, kind, priority, run_at) FROM STDIN"


def fill_delayed(url: str, jobs: int, as_written_by: str = "boundq") -> None:
    """COPY `jobs` no-op jobs due in a day at priority 9. As boundq writes them (enqueue,
    the API: status `scheduled`), or (`plain`) as an INSERT that gives run_at but leaves
    status to its default `new`, which the scout then moves to `scheduled` in batches."""
    statement = (COPY_DELAYED_AS_BOUNDQ if as_written_by == "boundq" else COPY_DELAYED_PLAIN)
    with psycopg.connect(url, autocommit=True) as conn:
        due = conn.execute("SELECT now() + interval '1 day'").fetchone()
        assert due is not None
        row = ("delayed", "noop", 9, due[0]) + (("scheduled",) if as_written_by == "boundq" else ())
        with conn.cursor() as cur, cur.copy(statement) as copy:
            for _ in range(jobs):
                copy.write_row(row)


def prepare(base: str, system: str, backlog: int, name: str = BENCH_DB,
            delayed: int = 0, delayed_as: str = "boundq", kind: str = "noop") -> str:
    """A fresh database with `backlog` jobs of `system` (boundq: of `kind`) waiting,
    VACUUM ANALYZEd (as autovacuum leaves a queue table in service) and checkpointed, so
    that no run inherits the fill's write-out. Returns its URL."""
    import asyncio

    url = dbadmin.fresh_database(base, name)
    if system == "pgqueuer":
        setup_pgqueuer(url, backlog)
    elif system == "procrastinate":
        setup_procrastinate(url, backlog)
    else:
        asyncio.run(migrate(url))
        fill_backlog(url, backlog, kind)
        if delayed:
            fill_delayed(url, delayed, delayed_as)
    with dbwatch.connect(url) as conn:
        conn.execute("VACUUM ANALYZE")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("CHECKPOINT")  # the embedded cluster's user may; others may not
    return url


# --- the processes ----------------------------------------------------------------------
@contextlib.contextmanager
def worker_process(url: str, env: dict[str, str], stderr: IO[bytes] | None = None
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """`boundq worker` on `url` with `env` (NUM_WORKERS, MAX_CONCURRENT_JOBS, ...);
    stopped with SIGTERM (then SIGKILL) on the way out unless already reaped."""
    proc = subprocess.Popen([sys.executable, "-m", "boundq", "worker"],
                            env=child_env({"DATABASE_URL": url, "LOG_LEVEL": "warning", **env}),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=stderr if stderr is not None else subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@dataclass
class Watched:
    exit_code: int
    cpu_s: float
    peak_rss_mb: float
    peak_connections: int
    wall_s: float  # this process's clock, start to exit: for the record only


def watch(proc: subprocess.Popen[Any], conn: psycopg.Connection[Any],
          done: Callable[[], bool] | None = None, timeout_s: float = 3600.0,
          progress: Callable[[float], None] | None = None) -> Watched:
    """Sample `proc`'s tree and the database's sessions every 0.2 s until `proc` exits.
    With `done`, send it SIGTERM once done() holds (a worker never exits by itself).
    On timeout, kill it and raise."""
    started = time.monotonic()
    peak_rss, peak_conns = 0.0, 0
    stop_deadline: float | None = None
    next_progress = started + PROGRESS_EVERY_S
    while True:
        peak_rss = max(peak_rss, tree_peak_rss_mb(proc.pid))
        peak_conns = max(peak_conns, dbwatch.sessions(conn))
        reaped = reap_nowait(proc)
        if reaped is not None:
            return Watched(reaped.exit_code, reaped.cpu_s, peak_rss, peak_conns,
                           time.monotonic() - started)
        now = time.monotonic()
        if stop_deadline is None and done is not None and done():
            proc.send_signal(signal.SIGTERM)
            stop_deadline = now + STOP_GRACE_S
        if now - started > timeout_s or (stop_deadline is not None and now > stop_deadline):
            proc.kill()
            reap(proc)
            raise RuntimeError(f"drain did not finish within {timeout_s:.0f}s"
                               if stop_deadline is None else "worker ignored SIGTERM")
        if progress is not None and now >= next_progress:
            next_progress = now + PROGRESS_EVERY_S
            progress(now - started)
        time.sleep(WATCH_EVERY_S)


def _result(conn: psycopg.Connection[Any], system: str, watched: Watched) -> dict[str, Any]:
    finished, seconds = dbwatch.drain_span(conn, system)
    return {"finished": finished, "elapsed_s": seconds,
            "jobs_per_s": finished / seconds if seconds > 0 else float("nan"),
            "client_cpu_s": watched.cpu_s, "peak_rss_mb": watched.peak_rss_mb,
            "peak_connections": watched.peak_connections, "wall_s": watched.wall_s}


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:]


def drain_cli(url: str, env: dict[str, str], first_n: int | None = None,
              timeout_s: float = 3600.0, show_progress: bool = True) -> dict[str, Any]:
    """Drain `url`'s backlog (or its first `first_n` jobs) with `boundq worker`."""
    with dbwatch.connect(url) as conn, tempfile.TemporaryFile() as log:
        total = first_n

        def progress(elapsed: float) -> None:
            done = dbwatch.boundq_finished(conn)
            of = f"/{total:,}" if total else ""
            print(f"    ... {done:,}{of} jobs finished after {elapsed:.0f}s", file=sys.stderr,
                  flush=True)

        with worker_process(url, env, stderr=log) as proc:
            watched = watch(proc, conn, lambda: not dbwatch.boundq_work_left(conn, first_n),
                            timeout_s, progress if show_progress else None)
        if watched.exit_code != 0:
            raise RuntimeError(f"boundq worker exited with {watched.exit_code}: {_tail(log)}")
        return {**_result(conn, "boundq", watched), "worker_pid": proc.pid}


def drain_child(url: str, mode: str, jobs: int, concurrency: int = 0, workers: int = 3,
                batch: int = 50, timeout_s: float = 3600.0) -> dict[str, Any]:
    """Drain with a child of reports/drain_children.py (it exits when done)."""
    argv = [sys.executable, "-m", "boundq.reports.drain_children", mode, url, str(jobs),
            "--concurrency", str(concurrency), "--workers", str(workers), "--batch",
            str(batch)]
    env = child_env({"LOG_LEVEL": "warning"})
    with dbwatch.connect(url) as conn, tempfile.TemporaryFile() as out:
        # stderr passes through: the child's progress lines and errors show as they happen
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out)
        watched = watch(proc, conn, None, timeout_s)
        if watched.exit_code != 0:
            raise RuntimeError(f"{mode} drain failed with exit code {watched.exit_code}")
        out.seek(0)
        child: dict[str, Any] = json.loads(out.read().decode().strip().splitlines()[-1])
        return {**_result(conn, SYSTEM_OF[mode], watched), **child}
