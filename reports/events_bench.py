"""What GET /events costs, measured side by side in one run.

    python -m boundq.reports.events_bench trigger --jobs 20000 --concurrency 200 --repeat 3
    python -m boundq.reports.events_bench fanout --jobs 20000 --concurrency 200 --clients 10,100

trigger   the change log's triggers (migration 0009) on the drain: `boundq worker` drains
          the same backlog of no-op jobs with the triggers disabled, enabled, and (to
          split the cost) enabled with an UPDATE trigger function that does nothing, in
          each round in alternating order, timed by the database (reports/drain_run.py);
          prints jobs/s and the database server's CPU per job, and the ratios to off.
fanout    N SSE clients on one API process (the real app under uvicorn, in a child
          process) while `boundq worker` drains a backlog: the log's events/s during the
          drain, each client's delivered events/s and share of the log's events, the
          clients dropped, and the API process's RSS before the clients and its peak
          with them.

Every run gets a fresh database on DATABASE_URL's cluster (or the embedded one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import psycopg

from boundq.core.config import load_settings
from boundq.core.pgembed import free_port, resolve_database_url
from boundq.core.queries import Q
from boundq.reports.dbwatch import wait_for_backends_to_exit
from boundq.reports.drain_run import drain_cli, prepare
from boundq.reports.server_cpu import postmaster_pid, server_cpu_seconds

# --- trigger ---------------------------------------------------------------------------
# The UPDATE trigger's function replaced by one that inserts nothing: what capturing the
# transition tables and firing the trigger cost without the log's rows.
NOOP_FUNCTION = (b"CREATE OR REPLACE FUNCTION boundq_log_updated_jobs() RETURNS trigger "
                 b"LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
MODES = ("off", "on", "noop")


def _drain(base: str, jobs: int, concurrency: int, mode: str) -> tuple[float, float]:
    """jobs/s, and the database server's CPU per job (µs) over the drain."""
    url = prepare(base, "boundq", jobs, name="boundq_events_bench")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(Q.job_events_switch, {"on": mode != "off"})  # `boundq events on|off`
        if mode == "noop":
            conn.execute(NOOP_FUNCTION)
    postmaster = postmaster_pid(url)
    cpu_before = server_cpu_seconds(postmaster) if postmaster else 0.0
    result = drain_cli(url, {"NUM_WORKERS": "3", "MAX_CONCURRENT_JOBS": str(concurrency)},
                       show_progress=False)
    cpu_us = float("nan")
    if postmaster:
        wait_for_backends_to_exit(url)
        cpu_us = (server_cpu_seconds(postmaster) - cpu_before) / result["finished"] * 1e6
    return float(result["jobs_per_s"]), cpu_us


def trigger(base: str, args: argparse.Namespace) -> None:
    """Every mode once a round, in alternating order (none always runs first)."""
    got: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for round_no in range(1, args.repeat + 1):
        for mode in (MODES if round_no % 2 else MODES[::-1]):
            got[mode].append(_drain(base, args.jobs, args.concurrency, mode))
        line = ", ".join(f"{mode} {got[mode][-1][0]:,.0f} jobs/s {got[mode][-1][1]:,.0f} µs"
                         for mode in MODES)
        print(f"round {round_no}: {line} (server CPU per job)", flush=True)
    off = got["off"]
    for mode in ("on", "noop"):
        pace = [m[0] / o[0] for m, o in zip(got[mode], off, strict=True)]
        cpu = [m[1] / o[1] for m, o in zip(got[mode], off, strict=True)]
        print(f"{mode}/off over {args.repeat} rounds: pace median {statistics.median(pace):.3f}"
              f" (min {min(pace):.3f}, max {max(pace):.3f}); server CPU per job median "
              f"{statistics.median(cpu):.3f} (min {min(cpu):.3f}, max {max(cpu):.3f}); "
              f"µs per job median {statistics.median(m[1] for m in got[mode]):,.0f} vs "
              f"{statistics.median(o[1] for o in off):,.0f}")


# --- fanout ----------------------------------------------------------------------------
def serve(url: str, port: int) -> None:
    """The child: the real app under uvicorn on `port`."""
    import uvicorn

    from boundq.server.app import create_app

    settings = load_settings(dotenv=None)
    app = create_app(settings, url)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


@contextlib.contextmanager
def api_process(url: str) -> Iterator[tuple[psutil.Process, int]]:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "boundq.reports.events_bench", "serve",
                              "--url", url, "--port", str(port)])
    try:
        for _ in range(600):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if child.poll() is not None:
                raise RuntimeError("the API process exited at start")
            time.sleep(0.05)
        yield psutil.Process(child.pid), port
    finally:
        child.terminate()
        child.wait(30)


@dataclass
class Client:
    events: int = 0
    first: float = 0.0
    last: float = 0.0
    ended: bool = False


async def _client(port: int, client: Client, opened: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    opened.set()
    tail = b""
    try:
        while chunk := await reader.read(65536):
            now = time.perf_counter()
            n = (tail + chunk).count(b"\ndata: ") + (tail + chunk).startswith(b"data: ")
            if n:
                client.first = client.first or now
                client.last = now
                client.events += n
            tail = chunk[-8:]
    finally:
        client.ended = True
        writer.close()


def _log_rows(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM job_events").fetchone()
    return int(row[0]) if row else 0


def _metric(port: int, name: str) -> float:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=120).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def fanout_once(url: str, concurrency: int, n_clients: int) -> None:
    with api_process(url) as (proc, port):
        rss_before = proc.memory_info().rss / 2**20
        clients = [Client() for _ in range(n_clients)]
        opened = [asyncio.Event() for _ in clients]
        tasks = [asyncio.create_task(_client(port, c, o)) for c, o in zip(clients, opened,
                                                                          strict=True)]
        await asyncio.gather(*(o.wait() for o in opened))
        before = _log_rows(url)
        peak = rss_before
        drain = asyncio.create_task(asyncio.to_thread(
            drain_cli, url, {"NUM_WORKERS": "3", "MAX_CONCURRENT_JOBS": str(concurrency)},
            show_progress=False))
        while not drain.done():
            peak = max(peak, proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.1)
        result = drain.result()
        expected = _log_rows(url) - before
        # Every event the log holds reaches each client not dropped (or the clients stop).
        for _ in range(600):
            if all(c.events >= expected or c.ended for c in clients):
                break
            peak = max(peak, proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.1)
        dropped = await asyncio.to_thread(_metric, port, "boundq_api_events_dropped_total")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    rates = [c.events / (c.last - c.first) for c in clients if c.last > c.first]
    shares = [c.events / expected for c in clients] if expected else [0.0]
    log_rate = expected / float(result["elapsed_s"])
    print(f"{n_clients:>4} clients: the log {expected:,} events at {log_rate:,.0f}/s "
          f"(drain {result['jobs_per_s']:,.0f} jobs/s); per client delivered "
          f"{statistics.median(rates) if rates else 0:,.0f} events/s (median; min "
          f"{min(rates) if rates else 0:,.0f}), share of the log min {min(shares):.3f}; "
          f"dropped {dropped:.0f}; API RSS {rss_before:.1f} MiB before, peak "
          f"{peak:.1f} MiB with clients", flush=True)


def fanout(base: str, args: argparse.Namespace) -> None:
    for n in (int(x) for x in args.clients.split(",")):
        url = prepare(base, "boundq", args.jobs, name="boundq_events_bench")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(Q.job_events_switch, {"on": True})
        asyncio.run(fanout_once(url, args.concurrency, n))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boundq.reports.events_bench",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("trigger", "fanout"):
        p = sub.add_parser(name)
        p.add_argument("--jobs", type=int, default=20_000)
        p.add_argument("--concurrency", type=int, default=200)
        p.add_argument("--repeat", type=int, default=3)
        p.add_argument("--clients", default="10,100")
    p = sub.add_parser("serve")
    p.add_argument("--url", required=True)
    p.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.url, args.port)
        return 0
    base = resolve_database_url(load_settings().database_url)
    print(f"{os.cpu_count()} cores; {args.jobs:,} no-op jobs per drain at "
          f"MAX_CONCURRENT_JOBS={args.concurrency}", flush=True)
    (trigger if args.command == "trigger" else fanout)(base, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
