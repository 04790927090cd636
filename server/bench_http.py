"""HTTP benchmark: single creates and bulk uploads against a real `boundq serve`.

    python -m boundq.server.bench_http [--connections 64] [--duration 20] [--bulk-jobs 100000]

It starts `boundq serve` in its own process (on DATABASE_URL, or the embedded cluster with
its durable defaults), waits for /readyz, then:
- drives `POST /jobs` with wrk (its own process; `apt-get install wrk`) for --duration
  seconds over --connections keep-alive connections, or, without wrk, with this module's
  own asyncio load generator in a separate process;
- uploads --bulk-jobs jobs as one multipart file, --bulk-rounds times, and reports jobs/s.
The workers run as in production (`boundq serve` = API + workers), so created jobs are
also being claimed and completed while the numbers are taken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from boundq.core import dbadmin
from boundq.core.pgembed import free_port

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"name": "bench", "status": "new"}'
wrk.headers["Content-Type"] = "application/json"
"""
_BODY = b'{"name": "bench", "status": "new"}'


def fresh_database(name: str) -> str:
    """An empty database named `name` on DATABASE_URL's server or the embedded cluster
    (durable settings), so every run starts from an empty queue."""
    from boundq.core.pgembed import resolve_database_url

    return dbadmin.fresh_database(resolve_database_url(os.environ.get("DATABASE_URL")), name)


def start_server(port: int, group_commit: bool, url: str) -> subprocess.Popen[bytes]:
    """`boundq serve` as users run it (API and worker processes), on a fresh database."""
    env = {**os.environ, "DATABASE_URL": url, "HTTP_PORT": str(port), "LOG_LEVEL": "warning",
           "API_GROUP_COMMIT": "1" if group_commit else "0",
           "MAX_QUEUE_DEPTH": str(10**9)}
    return subprocess.Popen([sys.executable, "-m", "boundq", "serve"], env=env)


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"boundq serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("boundq serve did not become ready")


def _ms(text: str) -> float:
    value, unit = float(re.sub(r"[a-z]+$", "", text)), re.sub(r"^[0-9.]+", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(url: str, connections: int, duration: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script.name,
           url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    Path(script.name).unlink()
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out)[1])  # type: ignore[index]
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"tool": "wrk", "command": " ".join(cmd), "requests_per_s": rps,
            "p50_ms": _ms(latency["50"]), "p99_ms": _ms(latency["99"]),
            "non_2xx": int(errors[1]) if errors else 0, "raw": out}


async def _loadgen(url: str, connections: int, duration: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        async def one_connection() -> None:
            nonlocal errors
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                r = await client.post(url, content=_BODY,
                                      headers={"Content-Type": "application/json"})
                latencies.append(time.perf_counter() - started)
                errors += r.status_code >= 300

        began = time.monotonic()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.monotonic() - began
    latencies.sort()
    return {"tool": "python-httpx", "requests_per_s": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2] * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "non_2xx": errors}


def run_loadgen(url: str, connections: int, duration: int) -> dict[str, Any]:
    """The fallback load generator, in its own process like wrk."""
    cmd = [sys.executable, "-m", "boundq.server.bench_http", "loadgen", url, str(connections),
           str(duration)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["command"] = " ".join(cmd)
    return result


def run_bulk(base: str, jobs: int, rounds: int) -> dict[str, Any]:
    payload = json.dumps([{"name": f"bulk {i}", "status": "new"} for i in range(jobs)]).encode()
    rates = []
    with httpx.Client(timeout=300) as client:
        for _ in range(rounds):
            started = time.perf_counter()
            r = client.post(f"{base}/jobs/bulk", files={"file": ("jobs.json", payload)})
            elapsed = time.perf_counter() - started
            if r.status_code != 201 or r.json()["created"] != jobs:
                raise SystemExit(f"bulk upload failed: {r.status_code} {r.text[:200]}")
            rates.append(jobs / elapsed)
    return {"jobs_per_upload": jobs, "bytes": len(payload), "rounds": rounds,
            "jobs_per_s": [round(x) for x in rates], "best_jobs_per_s": round(max(rates))}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["loadgen"]:
        url, connections, duration = args[1], int(args[2]), float(args[3])
        print(json.dumps(asyncio.run(_loadgen(url, connections, duration))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m boundq.server.bench_http")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bulk-jobs", type=int, default=100_000)
    parser.add_argument("--bulk-rounds", type=int, default=3)
    parser.add_argument("--no-group-commit", action="store_true",
                        help="compare: one INSERT (one commit) per request")
    parser.add_argument("--database", default="boundq_bench_http",
                        help="database created afresh for the run (dropped first)")
    parser.add_argument("--out", help="write the JSON summary here")
    opts = parser.parse_args(args)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(port, not opts.no_group_commit, fresh_database(opts.database))
    try:
        wait_ready(base, proc)
        single = run_wrk if shutil.which("wrk") else run_loadgen
        if opts.warmup:
            single(f"{base}/jobs", opts.connections, opts.warmup)
        result = single(f"{base}/jobs", opts.connections, opts.duration)
        bulk = run_bulk(base, opts.bulk_jobs, opts.bulk_rounds) if opts.bulk_jobs else None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    raw = result.pop("raw", "")
    summary = {"single_create": result, "bulk": bulk, "connections": opts.connections,
               "duration_s": opts.duration, "group_commit": not opts.no_group_commit}
    print(raw)
    print(json.dumps(summary, indent=2))
    if opts.out:
        Path(opts.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
