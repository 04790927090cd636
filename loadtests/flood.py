"""`boundq flood`: the API and workers under a bounded Locust flood, then proof of no loss.

1. PostgreSQL: DATABASE_URL, or the embedded cluster; a fresh database `boundq_flood`.
2. `boundq serve` (API + workers) on a free loopback port, with the settings of the run.
3. Locust, headless (or its web UI with `--ui`), as its own process, for a bounded time
   and user count; one progress line a second from the server's /metrics.
4. Drain: wait until no job is waiting or running (bounded by --drain-timeout).
5. Verify from the database that every acknowledged job is terminal (lost must be 0),
   and that every answer was 2xx, 429 or 503.
6. The run folder reports/runs/<timestamp>/: Locust's CSVs, server samples and metrics,
   run.json and (written by reports.flood_report) summary.md with figures.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from boundq.core import dbadmin
from boundq.core.config import describe, load_settings
from boundq.core.pgembed import free_port, resolve_database_url
from boundq.core.runinfo import run_metadata, timestamp
from boundq.loadtests import processes as procs
from boundq.loadtests.outcome import print_summary, summarize
from boundq.loadtests.sampling import Progress, Sampler
from boundq.loadtests.verify import read_acked, read_statuses, unexpected_statuses, unfinished, verify

FLOOD_DB = "boundq_flood"


@dataclass
class FloodOptions:
    scenario: str = "mixed"
    users: int = 50
    spawn_rate: float = 25.0
    duration_s: float = 30.0
    rate: str = ""  # arrival scenario: jobs/s, or "<k>x" = k times the capacity bound
    job_ms: int = 10  # 0: noop jobs; else `sleep` jobs of this many ms
    bulk_size: int = 100
    max_queue_depth: int = 2000
    drain_timeout_s: float = 300.0
    out_root: Path = Path("reports/runs")
    database_url: str | None = None
    fresh_db: bool = True
    num_workers: int | None = None
    max_concurrent_jobs: int | None = None
    max_db_connections: int | None = None
    ui_port: int | None = None  # the Locust web UI instead of a headless run
    locust_processes: int = 1
    in_flight: int = 256
    server_env: dict[str, str] = field(default_factory=dict)


@dataclass
class FloodResult:
    run_dir: Path
    passed: bool
    summary: dict[str, Any]


class FloodError(RuntimeError):
    """A flood that could not run (not one that ran and failed its checks)."""


def _server_env(o: FloodOptions, db_url: str, port: int) -> dict[str, str]:
    env = {"DATABASE_URL": db_url, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port),
           "MAX_QUEUE_DEPTH": str(o.max_queue_depth), "LOG_LEVEL": "warning"}
    for name, value in (("NUM_WORKERS", o.num_workers),
                        ("MAX_CONCURRENT_JOBS", o.max_concurrent_jobs),
                        ("MAX_DB_CONNECTIONS", o.max_db_connections)):
        if value is not None:
            env[name] = str(value)
    env.update(o.server_env)
    return procs.child_env(env)


def arrival_rate(rate: str, capacity: float | None) -> float:
    text = rate.strip().lower()
    if not text:
        return 0.0
    if text.endswith("x"):
        if not capacity:
            raise FloodError("--rate Nx needs a capacity bound: give --job-ms > 0")
        return float(text[:-1]) * capacity
    return float(text)


def _write_samples(path: Path, sampler: Sampler) -> None:
    rows = [s.row() for s in sampler.samples]
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _load_phase(o: FloodOptions, locust: Any, sampler: Sampler, progress: Progress) -> None:
    """Sample once a second until Locust ends (or its time is well past). Ctrl-C or
    SIGTERM end the load early; the drain and the verification still run."""
    limit = None if o.ui_port is not None else o.duration_s + 60
    started = time.monotonic()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while locust.poll() is None:
            progress.show(sampler.sample("load"))
            if limit is not None and time.monotonic() - started > limit:
                progress.end()
                print("locust overran its time: stopping it", file=sys.stderr)
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        progress.end()
        print("stopping the load (Ctrl-C again to abort the drain)", file=progress.stream,
              flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    procs.stop(locust, signal.SIGTERM, timeout=30)
    progress.show(sampler.sample("load"), force=True)


def _drain_phase(o: FloodOptions, db_url: str, sampler: Sampler, progress: Progress) -> bool:
    deadline = time.monotonic() + o.drain_timeout_s
    while time.monotonic() < deadline:
        sample = sampler.sample("drain")
        progress.show(sample)
        if sample.waiting + sample.processing == 0 and unfinished(db_url) == 0:
            progress.show(sample, force=True)
            return True
        time.sleep(1.0)
    return False


def run_flood(o: FloodOptions, stream: TextIO | None = None) -> FloodResult:
    out = stream or sys.stdout
    if o.scenario not in procs.SCENARIOS:
        raise FloodError(f"unknown scenario {o.scenario!r}: {', '.join(procs.SCENARIOS)}")
    base_url = resolve_database_url(o.database_url or load_settings().database_url)
    db_url = dbadmin.fresh_database(base_url, FLOOD_DB) if o.fresh_db else base_url
    port = free_port()
    server_env = _server_env(o, db_url, port)
    settings = load_settings(server_env, dotenv=procs.ROOT / ".env")
    capacity = settings.max_concurrent_jobs * 1000 / o.job_ms if o.job_ms > 0 else None
    rate = arrival_rate(o.rate, capacity) if o.scenario == "arrival" else 0.0
    if o.scenario == "arrival" and rate <= 0:
        raise FloodError("the arrival scenario needs --rate (jobs/s, or Nx the capacity)")
    run_dir = o.out_root / timestamp()
    run_dir.mkdir(parents=True, exist_ok=False)
    meta = {"kind": "flood", **run_metadata(db_url), "options": _options_dict(o),
            "settings": describe(settings) | {"database_url": "(flood database)"},
            "capacity_bound_jobs_per_s": capacity, "arrival_rate_per_s": rate or None}
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    base = f"http://127.0.0.1:{port}"
    what = (f"{o.scenario}: {o.users} users" + (f", {rate:,.0f} arrivals/s" if rate else "")
            + (f", {o.duration_s:.0f}s" if o.ui_port is None else ", web UI"))
    job = f"sleep {o.job_ms} ms" if o.job_ms else "noop"
    print(f"boundq flood ({what}); jobs: {job}; MAX_CONCURRENT_JOBS="
          f"{settings.max_concurrent_jobs} NUM_WORKERS={settings.num_workers} "
          f"MAX_QUEUE_DEPTH={settings.max_queue_depth}; PostgreSQL "
          f"{meta['postgres'].get('server_version')} fsync={meta['postgres'].get('fsync')} "
          f"synchronous_commit={meta['postgres'].get('synchronous_commit')}", file=out,
          flush=True)
    server = locust = None
    sampler: Sampler | None = None
    try:
        server = procs.start_server(server_env, run_dir / "server.log")
        procs.wait_ready(base, server)
        sampler = Sampler(base, db_url, server.pid)
        locust_env = procs.child_env({
            "FLOOD_OUT_DIR": str(run_dir.resolve()), "FLOOD_JOB_MS": str(o.job_ms),
            "FLOOD_BULK_SIZE": str(o.bulk_size), "FLOOD_RATE": str(rate),
            "FLOOD_USERS": str(o.users), "FLOOD_TIME": str(o.duration_s),
            "FLOOD_IN_FLIGHT": str(o.in_flight)})
        argv = procs.locust_argv(o.scenario, base, run_dir / "locust", o.users, o.spawn_rate,
                                 o.duration_s, o.ui_port, o.locust_processes)
        locust = procs.start_locust(argv, locust_env, run_dir / "locust.log")
        if o.ui_port is not None:
            print(f"Locust web UI: http://127.0.0.1:{o.ui_port}  (API {base}); Ctrl-C ends "
                  "the run, drains and verifies", file=out, flush=True)
        progress = Progress(None if o.ui_port is not None else o.duration_s, out)
        _load_phase(o, locust, sampler, progress)
        drained = _drain_phase(o, db_url, sampler, progress)
        progress.end()
        (run_dir / "server_metrics.prom").write_text(sampler.last_metrics)
    finally:
        procs.stop(locust, signal.SIGTERM, timeout=30)
        server_code = procs.stop(server, signal.SIGTERM, timeout=60)
        if sampler is not None:
            sampler.close()
            _write_samples(run_dir / "server_samples.csv", sampler)
    acked = read_acked(run_dir)
    verdict = verify(db_url, acked, o.fresh_db)
    statuses = read_statuses(run_dir)
    summary = summarize(run_dir, o, verdict, statuses, sampler, settings, capacity, rate)
    summary.update(drained=drained, server_exit_code=server_code,
                   unexpected_statuses=unexpected_statuses(statuses))
    failures = _failures(summary, verdict)
    summary["passed"], summary["failures"] = not failures, failures
    meta["result"] = summary
    meta["verdict"] = verdict.as_dict()
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    if not failures:
        for path in run_dir.glob("acked-*.txt"):
            path.unlink()  # thousands of ids; kept only when something is wrong
    print_summary(summary, verdict, run_dir, out)
    return FloodResult(run_dir, not failures, summary)


def _failures(summary: dict[str, Any], verdict: Any) -> list[str]:
    failures = []
    if verdict.lost:
        failures.append(f"LOST {verdict.lost} acknowledged jobs (e.g. ids "
                        f"{verdict.lost_examples})")
    if summary["unexpected_statuses"]:
        failures.append(f"answers other than 2xx/429/503: {summary['unexpected_statuses']}")
    if not summary["drained"]:
        failures.append("the queue did not drain within --drain-timeout")
    if verdict.acknowledged == 0:
        failures.append("the API acknowledged no job at all")
    return failures


def _options_dict(o: FloodOptions) -> dict[str, Any]:
    out = asdict(o)
    out["out_root"] = str(o.out_root)
    out.pop("database_url", None)
    return out
