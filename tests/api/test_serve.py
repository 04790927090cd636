"""`boundq serve` end to end: one process runs the API and the workers; SIGTERM drains it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import psycopg
import pytest

from boundq.core.pgembed import free_port

# These tests are about serve's processes and signals, not the door: a create is never
# refused because the API's event loop runs late (the API process, niced and just
# started on a busy machine, answered 429 to the creates they make).
NO_SHEDDING = {"API_SHED_LAG_SECONDS": "3600"}


@pytest.mark.slow
def test_serve_runs_api_and_workers_and_stops_on_sigterm(db_url: str) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "HTTP_PORT": str(port), "LOG_LEVEL": "warning",
           "POLL_INTERVAL_SECONDS": "0.1", "SHUTDOWN_GRACE_SECONDS": "1", "API_NICE": "0",
           "API_POOL_BUFFER": "3", "MAX_DB_CONNECTIONS": "10", **NO_SHEDDING}
    proc = subprocess.Popen([sys.executable, "-m", "boundq", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # as _wait_ready
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "boundq serve did not become ready"
            time.sleep(0.1)
        r = httpx.post(f"{base}/jobs", json={"name": "Test Job", "status": "new"})
        assert r.status_code == 201
        job_id = r.json()["id"]
        deadline = time.monotonic() + 15
        while httpx.get(f"{base}/jobs/{job_id}").json()["status"] != "success":
            assert time.monotonic() < deadline, "the in-process worker did not run the job"
            time.sleep(0.1)
        history = httpx.get(f"{base}/jobs/{job_id}").json()["attempt_history"]
        assert [(a["attempt"], a["outcome"]) for a in history] == [(1, "success")]
        # The worker counts a success after its commit returns, so the job can read as done
        # a moment before the worker process has counted it.
        deadline = time.monotonic() + 15
        while "boundq_jobs_succeeded_total 1" not in (metrics := httpx.get(f"{base}/metrics").text):
            assert time.monotonic() < deadline, metrics
            time.sleep(0.1)
        assert "boundq_api_pool_pool_max 3" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_serve_drains_on_signals_to_the_whole_group(db_url: str, tmp_path, sig) -> None:
    """Ctrl-C reaches the parent, the API process and the worker processes at once, and
    the parent forwards it too: everyone stops once, gracefully, without a traceback."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "HTTP_PORT": str(port), "LOG_LEVEL": "info",
           "POLL_INTERVAL_SECONDS": "0.1", "SHUTDOWN_GRACE_SECONDS": "0.5", "API_NICE": "0",
           "MAX_CONCURRENT_JOBS": "3", "WORKER_PROCESSES": "2", **NO_SHEDDING}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "boundq", "serve"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
        ids = [httpx.post(f"{base}/jobs", json={
            "name": f"long-{i}", "kind": "sleep", "payload": {"ms": 60_000},
            "max_attempts": 1}).json()["id"] for i in range(6)]  # 3 permits x 2 processes
        deadline = time.monotonic() + 30
        while sum(httpx.get(f"{base}/jobs/{i}").json()["status"] == "processing"
                  for i in ids) < len(ids):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(proc.pid, sig)
        os.killpg(proc.pid, sig)
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-3000:]
    with psycopg.connect(db_url, autocommit=True) as conn:
        statuses = dict(conn.execute("SELECT status::text, count(*) FROM jobs GROUP BY 1"
                                     ).fetchall())
        released = conn.execute("SELECT count(*) FROM job_attempts WHERE error = "
                                "'released at worker shutdown'").fetchone()
    assert statuses == {"new": len(ids)}, statuses
    assert released is not None and released[0] == len(ids)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nothing of the group is left


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Any) -> None:
    # Bounded, not timed: the API process runs at API_NICE, last in line on a busy machine.
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "boundq serve did not become ready"
        time.sleep(0.1)
