"""`boundq serve` end to end: one process runs the API and the workers; SIGTERM drains it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from boundq.core.pgembed import free_port


@pytest.mark.slow
def test_serve_runs_api_and_workers_and_stops_on_sigterm(db_url: str) -> None:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": db_url, "HTTP_PORT": str(port), "LOG_LEVEL": "warning",
           "POLL_INTERVAL_SECONDS": "0.1", "SHUTDOWN_GRACE_SECONDS": "1",
           "API_POOL_BUFFER": "3", "MAX_DB_CONNECTIONS": "10"}
    proc = subprocess.Popen([sys.executable, "-m", "boundq", "serve"], env=env,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
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
        metrics = httpx.get(f"{base}/metrics").text
        assert "boundq_jobs_succeeded_total 1" in metrics
        assert "boundq_api_pool_pool_max 3" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
