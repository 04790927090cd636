"""The primary's CPU under a read-heavy flood, without and with the read replica.

    python -m boundq.reports.replica_bench [--duration 20] [--clients 2] [--connections 16]
                                           [--rounds 2]

Makes a primary and a streaming replica of it (the embedded cluster's own code, durable
settings, in a temp directory), seeds --jobs jobs through `POST /jobs/bulk` and lets the
workers finish them, then alternates, --rounds times, two runs of `boundq serve` on the
same database: one without REPLICA_DATABASE_URL and one with it (waiting until /metrics
says the replica is in use). Each run floods `GET /jobs/{id}` (random seeded ids, 60 %),
`GET /jobs?limit=50` (30 %) and `GET /stats` (10 %) for --duration seconds from --clients
load generator processes of --connections connections each. The workers run as in
production; they are idle by then, and idle the same in both runs.

CPU is read from /proc (reports/server_cpu.py), for each server as a whole (postmaster
and backends, living or reaped: the workers' polls, autovacuum and checkpoints included)
and for the backends of the API's connections alone (application_name boundq-api: the
reads' own cost). Printed per run: reads/s, non-2xx, the primary's CPU under the flood
(seconds, share of one core), its idle share measured just before (--idle seconds,
nothing sent) and the part above it, the API backends' CPU on the primary (seconds, and
per 1,000 reads), the replica's CPU (whole, API backends), and which pool served the
reads (boundq_api_reads_total); then the medians and their ratio, with / without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from boundq.core import dbadmin
from boundq.core.pgembed import EmbeddedPostgres, free_port
from boundq.core.pgreplica import EmbeddedReplica
from boundq.reports.server_cpu import (
    parse_stat_times,
    postmaster_pid,
    server_cpu_seconds,
    stat_tail,
)

DATABASE = "boundq_bench_replica"
LIST_SHARE, STATS_SHARE = 0.3, 0.1  # the rest: GET /jobs/{id}


# --- the load generator (its own process) -----------------------------------------------
async def _loadgen(base: str, connections: int, duration: float, max_id: int
                   ) -> dict[str, Any]:
    done = errors = 0
    rng = random.Random(os.getpid())
    stop_at = time.monotonic() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as client:
        async def one_connection() -> None:
            nonlocal done, errors
            while time.monotonic() < stop_at:
                pick = rng.random()
                path = ("/stats" if pick < STATS_SHARE else "/jobs?limit=50"
                        if pick < STATS_SHARE + LIST_SHARE else f"/jobs/{rng.randint(1, max_id)}")
                try:
                    r = await client.get(path)
                    errors += r.status_code >= 300
                except httpx.HTTPError:
                    errors += 1
                done += 1

        began = time.monotonic()
        await asyncio.gather(*(one_connection() for _ in range(connections)))
        elapsed = time.monotonic() - began
    return {"requests": done, "non_2xx": errors, "elapsed_s": elapsed}


def run_loadgen(base: str, connections: int, duration: float, max_id: int
                ) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "boundq.reports.replica_bench", "loadgen", base,
           str(connections), str(duration), str(max_id)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


# --- the server -----------------------------------------------------------------------------
def start_serve(url: str, replica_url: str | None, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REPLICA_DATABASE_URL"}
    # API_NICE=0: what is measured is the cost of reads, not who wins the CPU; at its
    # default lower priority the API got a fraction of a core on a shared machine.
    env.update({"DATABASE_URL": url, "HTTP_PORT": str(port), "LOG_LEVEL": "warning",
                "MAX_QUEUE_DEPTH": str(10**9), "API_NICE": "0"})
    if replica_url:
        env["REPLICA_DATABASE_URL"] = replica_url
    return subprocess.Popen([sys.executable, "-m", "boundq", "serve"], env=env)


def wait_until(check: Any, what: str, proc: subprocess.Popen[bytes], timeout_s: float = 120
               ) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"boundq serve exited with {proc.returncode}")
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def metric_sum(text: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(w in line for w in want):
            total += float(line.rsplit(" ", 1)[1])
    return total


def api_backend_ticks(url: str) -> dict[int, int]:
    """CPU ticks of each backend serving the API's connections on the server of `url`
    (application_name boundq-api): the reads' own cost there, apart from the workers',
    autovacuum's and checkpoints'."""
    with psycopg.connect(url, autocommit=True) as conn:
        pids = [int(row[0]) for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'boundq-api'")]
    ticks: dict[int, int] = {}
    for pid in pids:
        try:
            ticks[pid] = parse_stat_times(stat_tail(Path(f"/proc/{pid}/stat").read_text()))[1]
        except OSError:
            continue  # gone since
    return ticks


def api_backend_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU of the API's backends between two readings (a backend that ended in between is
    missed: the API's pool keeps its connections, so few if any do)."""
    return sum(t - before.get(pid, 0) for pid, t in after.items()) / os.sysconf("SC_CLK_TCK")


def stop_serve(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --- one run --------------------------------------------------------------------------------
def one_run(label: str, url: str, replica_url: str, with_replica: bool, opts: argparse.Namespace,
            max_id: int, pids: tuple[int, int]) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_serve(url, replica_url if with_replica else None, port)
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200,
                   "/readyz", proc)
        if with_replica:
            wait_until(lambda: metric_sum(httpx.get(f"{base}/metrics", timeout=5).text,
                                          "boundq_api_replica_in_use") == 1,
                       "the replica in use", proc)
        if opts.warmup:
            run_loadgen(base, opts.connections, opts.warmup, max_id).communicate()
        # The idle cost (the workers' polls, the maintenance loops, autovacuum, the read
        # router's probe) over --idle seconds, so the flood's own cost can be told apart.
        idle0, idle_t0 = server_cpu_seconds(pids[0]), time.monotonic()
        time.sleep(opts.idle)
        idle_rate = (server_cpu_seconds(pids[0]) - idle0) / (time.monotonic() - idle_t0)
        before_metrics = httpx.get(f"{base}/metrics", timeout=5).text
        api0 = [api_backend_ticks(u) for u in (url, replica_url)]
        cpu0 = [server_cpu_seconds(pid) for pid in pids]
        loads = [run_loadgen(base, opts.connections, opts.duration, max_id)
                 for _ in range(opts.clients)]
        outs = [load.communicate()[0] for load in loads]
        cpu1 = [server_cpu_seconds(pid) for pid in pids]
        api1 = [api_backend_ticks(u) for u in (url, replica_url)]
        after_metrics = httpx.get(f"{base}/metrics", timeout=5).text
    finally:
        stop_serve(proc)
    parts = [json.loads(out.strip().splitlines()[-1]) for out in outs]
    result = {"requests": sum(p["requests"] for p in parts),
              "non_2xx": sum(p["non_2xx"] for p in parts),
              "elapsed_s": max(p["elapsed_s"] for p in parts)}
    elapsed = result["elapsed_s"]
    api_primary_s, api_replica_s = (api_backend_seconds(api0[i], api1[i]) for i in (0, 1))
    primary_s, replica_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    served = {pool: metric_sum(after_metrics, "boundq_api_reads_total", pool=pool)
              - metric_sum(before_metrics, "boundq_api_reads_total", pool=pool)
              for pool in ("primary", "replica")}
    reads = result["requests"]
    above_idle = max(0.0, primary_s - idle_rate * elapsed)
    return {"run": label, "replica": with_replica, "reads": reads,
            "reads_per_s": round(reads / elapsed, 1), "non_2xx": result["non_2xx"],
            "primary_cpu_s": round(primary_s, 2),
            "primary_cpu_share": round(primary_s / elapsed, 3),
            "primary_idle_share": round(idle_rate, 3),
            "primary_above_idle_s": round(above_idle, 2),
            "primary_ms_per_1k_reads": round(above_idle * 1e6 / max(reads, 1), 1),
            "primary_api_backends_s": round(api_primary_s, 2),
            "primary_api_ms_per_1k_reads": round(api_primary_s * 1e6 / max(reads, 1), 1),
            "replica_cpu_s": round(replica_s, 2),
            "replica_api_backends_s": round(api_replica_s, 2),
            "served_by_primary": int(served["primary"]),
            "served_by_replica": int(served["replica"])}


def seed(url: str, jobs: int) -> int:
    """--jobs finished jobs through the API (workers run them); the highest id."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_serve(url, None, port)
    try:
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=2).status_code == 200,
                   "/readyz", proc)
        body = json.dumps([{"name": f"seed {i}", "payload": {"i": i}} for i in range(jobs)])
        r = httpx.post(f"{base}/jobs/bulk", files={"file": ("jobs.json", body.encode())},
                       timeout=300)
        if r.status_code != 201:
            raise SystemExit(f"seeding failed: {r.status_code} {r.text[:200]}")

        def finished() -> bool:
            counts = httpx.get(f"{base}/stats", timeout=5).json()["counts"]
            return bool(counts["new"] == 0 and counts["processing"] == 0)

        wait_until(finished, "the seeded jobs to finish", proc, timeout_s=600)
    finally:
        stop_serve(proc)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(id) FROM jobs").fetchone()
    return int(row[0]) if row and row[0] else 1


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["run", "reads_per_s", "non_2xx", "primary_cpu_s", "primary_cpu_share",
            "primary_idle_share", "primary_above_idle_s", "primary_api_backends_s",
            "primary_api_ms_per_1k_reads", "replica_cpu_s", "replica_api_backends_s",
            "served_by_primary", "served_by_replica"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).rjust(w) for c, w in zip(cols, widths, strict=True)))


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str, replica: bool) -> float:
        return float(statistics.median(r[key] for r in rows if r["replica"] == replica))

    out: dict[str, Any] = {}
    for key in ("reads_per_s", "primary_cpu_s", "primary_cpu_share", "primary_above_idle_s",
                "primary_ms_per_1k_reads", "primary_api_backends_s",
                "primary_api_ms_per_1k_reads", "replica_cpu_s"):
        without, with_ = median(key, False), median(key, True)
        out[key] = {"without": without, "with": with_,
                    "ratio_with_over_without": round(with_ / without, 3) if without else None}
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["loadgen"]:
        base, connections, duration, max_id = args[1], int(args[2]), float(args[3]), int(args[4])
        print(json.dumps(asyncio.run(_loadgen(base, connections, duration, max_id))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m boundq.reports.replica_bench")
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--idle", type=float, default=5,
                        help="seconds of the primary's idle CPU measured before each flood")
    parser.add_argument("--connections", type=int, default=16, help="per load process")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--rounds", type=int, default=2,
                        help="pairs of runs, alternating without/with the replica")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs seeded to read")
    parser.add_argument("--out", help="write the JSON summary here")
    opts = parser.parse_args(args)

    root = Path(tempfile.mkdtemp(prefix="boundq-replica-bench-"))
    os.chmod(root, 0o755)  # the server runs as an unprivileged user when we are root
    primary = EmbeddedPostgres(root / "pg")
    replica = EmbeddedReplica(primary)
    try:
        print("starting a primary and a streaming replica ...", flush=True)
        primary.start()
        url = dbadmin.fresh_database(primary.url(), DATABASE)
        replica.start()
        replica_url = dbadmin.database_url(replica.url(), DATABASE)
        print(f"seeding {opts.jobs} jobs ...", flush=True)
        max_id = seed(url, opts.jobs)
        pids = (postmaster_pid(url), postmaster_pid(replica_url))
        if pids[0] is None or pids[1] is None:
            raise SystemExit("the servers' processes cannot be read from /proc")
        rows = []
        for i in range(opts.rounds):
            for with_replica in (False, True):
                label = f"{i + 1}:{'with' if with_replica else 'without'}"
                print(f"run {label} replica: {opts.duration:g} s of reads over "
                      f"{opts.clients} x {opts.connections} connections ...", flush=True)
                rows.append(one_run(label, url, replica_url, with_replica, opts, max_id,
                                    (pids[0], pids[1])))
    finally:
        replica.destroy()
        primary.destroy()
        shutil.rmtree(root, ignore_errors=True)
    print()
    print_table(rows)
    summary = {"command": "python -m boundq.reports.replica_bench " + " ".join(args),
               "cores": os.cpu_count(), "duration_s": opts.duration,
               "connections": opts.connections, "clients": opts.clients,
               "jobs": opts.jobs, "runs": rows,
               "medians": summarise(rows)}
    print(json.dumps(summary["medians"], indent=2))
    if opts.out:
        Path(opts.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
