"""`boundq flood`: the API and workers under a bounded Locust flood, then proof of no loss.

1. PostgreSQL: DATABASE_URL, or the embedded cluster; a fresh database `boundq_flood`.
2. `boundq serve` (API + workers) on a free loopback port, with the settings of the run;
   with --extra-workers, more `boundq worker` processes beside it (hosts.py).
3. Idle calibration: a backlog of the run's job kind, drained by the workers with no
   other load; its pace measured from the database (pace.py).
4. Locust, headless (or its web UI with `--ui`), as its own process (or a master and
   --locust-processes workers), for a bounded time and user count; one progress line a
   second from the server's /metrics and the database.
5. Drain: wait until no job is waiting or running (bounded by --drain-timeout).
6. Verify from the database that every acknowledged job is terminal (lost must be 0),
   that every answer was 2xx, 429 or 503, and that processing under the flood kept pace
   with idle processing (when the flood saturated the workers).
7. The run folder reports/runs/<timestamp>/: Locust's CSVs, the users' tallies, server
   samples and metrics, run.json and (written by reports.flood_report) summary.md.

SIGINT and SIGTERM (signals.py): the first stops the load, the second aborts the drain;
the server and the workers are always stopped with SIGTERM and waited for, and the
verdict is always printed.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from boundq.core import dbadmin
from boundq.core.config import Settings, describe, load_settings
from boundq.core.cpus import api_cpus
from boundq.core.cpus import named as named_cpus
from boundq.core.pgembed import free_port, resolve_database_url
from boundq.core.runinfo import run_metadata, timestamp
from boundq.core.validation import MAX_DEPENDENCIES
from boundq.loadtests import flow_scenarios as flows
from boundq.loadtests import pace as pacing
from boundq.loadtests import probe
from boundq.loadtests import processes as procs
from boundq.loadtests.flow_phase import alone_phase, plan_for
from boundq.loadtests.hosts import Hosts, HostsError
from boundq.loadtests.outcome import print_summary, summarize
from boundq.loadtests.phases import FloodRun
from boundq.loadtests.sampling import Progress, Sampler
from boundq.loadtests.signals import Interrupts
from boundq.loadtests.tally import read_tallies
from boundq.loadtests.verify import read_acked, unexpected_statuses, verify
from boundq.loadtests.workflow_scenario import WorkflowPlan, write_graphs

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
    locust_nice: int = 0  # added to the load generator's niceness (lower CPU priority)
    # The load generator's CPUs: the API's (API_CPUS), set from the server's settings. It
    # stands in for clients on other machines: it must not take the workers' CPU either.
    locust_cpus: frozenset[int] | None = None
    in_flight: int = 256
    calibration_s: float = 5.0  # idle calibration: seconds of work at the capacity bound
    calibration_jobs: int | None = None  # or exactly this many jobs
    pace_threshold: float = 0.9  # fail when processing under flood < this x idle
    probe_rate: float = probe.DEFAULT_RATE  # the door probe's creates/s; 0 = no probe
    refusal_p99_ms: float = 0.0  # fail when the probe's 429 p99 is above this (0: not judged)
    accepted_p99_ms: float = 0.0  # the same for its 201s (the CLI judges 5 and 50 ms)
    extra_workers: int = 0  # `boundq worker` processes beside `boundq serve`
    proxied_worker: bool = False  # the last extra worker goes through the fault proxy
    partition_s: float = 0.0  # black-hole the proxied worker this long during the load
    server_env: dict[str, str] = field(default_factory=dict)
    # flow scenarios (tenants, ratelimited; loadtests/flow_scenarios.py)
    alone_s: float = 10.0  # the steady queue alone before the flood
    limit_rate: float = 20.0  # ratelimited: the kind's rate_per_s
    limit_burst: int = 10  # ratelimited: its burst
    isolation_threshold: float = 2.0  # fail when steady pickup p99 flooded > this x alone
    flow_threshold: float = 0.5  # fail when steady completions/s flooded < this x alone
    # workflow scenario (loadtests/workflow_scenario.py)
    fan_out: int = 100  # children per graph
    workflow_threshold: float = 0.0  # fail when graph p99 flooded > this x alone; 0: not judged


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


def capacity_bound(settings: Settings, o: FloodOptions) -> float | None:
    """Permits x 1000 / job ms, over every worker process (serve's and the extra ones)."""
    if o.job_ms <= 0:
        return None
    processes = settings.worker_processes + o.extra_workers
    return processes * settings.max_concurrent_jobs * 1000 / o.job_ms


def _write_samples(path: Path, sampler: Sampler) -> None:
    rows = [s.row() for s in sampler.samples]
    if not rows:
        return
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def run_flood(o: FloodOptions, stream: TextIO | None = None,
              interrupts: Interrupts | None = None) -> FloodResult:
    own_interrupts = interrupts is None
    signals = interrupts or Interrupts().install()
    try:
        return _run_flood(o, stream or sys.stdout, signals)
    finally:
        if own_interrupts:
            signals.restore()


def _run_flood(o: FloodOptions, out: TextIO, interrupts: Interrupts) -> FloodResult:
    if o.scenario not in procs.SCENARIOS:
        raise FloodError(f"unknown scenario {o.scenario!r}: {', '.join(procs.SCENARIOS)}")
    if o.partition_s > 0 and not o.proxied_worker:
        raise FloodError("--partition needs --proxied-worker")
    if o.proxied_worker and o.extra_workers < 1:
        raise FloodError("--proxied-worker needs --extra-workers 1 or more")
    # the sink names every child in its depends_on_index
    if o.scenario == "workflow" and not 1 <= o.fan_out <= MAX_DEPENDENCIES:
        raise FloodError(f"--fan-out must be between 1 and {MAX_DEPENDENCIES}")
    base_url = resolve_database_url(o.database_url or load_settings().database_url)
    db_url = dbadmin.fresh_database(base_url, FLOOD_DB) if o.fresh_db else base_url
    port = free_port()
    flow = plan_for(o)
    server_env = _server_env(o, db_url, port) | (flow.server_env() if flow else {})
    settings = load_settings(server_env)  # and ./.env, as the server reads it
    try:
        o = replace(o, locust_cpus=api_cpus(settings.api_cpus))
    except ValueError as exc:
        raise FloodError(str(exc)) from None
    capacity = capacity_bound(settings, o)
    rate = arrival_rate(o.rate, capacity) if o.scenario == "arrival" else 0.0
    if flow is not None:
        flow.steady_rate = arrival_rate(o.rate, capacity) or flow.default_rate
    if o.scenario == "arrival" and rate <= 0:
        raise FloodError("the arrival scenario needs --rate (jobs/s, or Nx the capacity)")
    run_dir = o.out_root / timestamp()
    run_dir.mkdir(parents=True, exist_ok=False)
    meta = {"kind": "flood", **run_metadata(db_url), "options": _options_dict(o),
            "settings": describe(settings) | {"database_url": "(flood database)"},
            "capacity_bound_jobs_per_s": capacity, "arrival_rate_per_s": rate or None}
    if flow is not None:
        meta["flow"] = {"scenario": flow.scenario, "plan": flow.describe(),
                        "steady_rate_per_s": flow.steady_rate}
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    base = f"http://127.0.0.1:{port}"
    what = (f"{o.scenario}: {o.users} users" + (f", {rate:,.0f} arrivals/s" if rate else "")
            + (f", {o.duration_s:.0f}s" if o.ui_port is None else ", web UI")
            + (f", {o.locust_processes} Locust processes" if o.locust_processes > 1 else "")
            + (f", Locust at nice +{o.locust_nice}" if o.locust_nice > 0 else "")
            + (f", Locust and the API on {named_cpus(o.locust_cpus)}"
               if o.locust_cpus is not None else ""))
    job = f"sleep {o.job_ms} ms" if o.job_ms else "noop"
    print(f"boundq flood ({what}); jobs: {job}; MAX_CONCURRENT_JOBS="
          f"{settings.max_concurrent_jobs} NUM_WORKERS={settings.num_workers} "
          f"MAX_QUEUE_DEPTH={settings.max_queue_depth}"
          + (f"; {o.extra_workers} extra worker processes" if o.extra_workers else "")
          + f"; PostgreSQL {meta['postgres'].get('server_version')} fsync="
          f"{meta['postgres'].get('fsync')} synchronous_commit="
          f"{meta['postgres'].get('synchronous_commit')}", file=out, flush=True)
    run = FloodRun(o, out, interrupts)
    idle: pacing.Rate | None = None
    load_end: datetime | None = None
    load_start: datetime | None = None
    alone: tuple[datetime, datetime] | None = None
    drained = False
    server_code: int | None = None
    probed: probe.ProbeResult | None = None
    try:
        run.server = procs.start_server(server_env, run_dir / "server.log")
        procs.wait_ready(base, run.server)
        if o.extra_workers:
            run.hosts = Hosts(o.extra_workers, o.proxied_worker, db_url, run_dir,
                              lambda extra: {**server_env, **extra})
            for line in run.hosts.start():
                run.say(line)
            run.hosts.wait_ready(interrupts.stop_load.is_set)
        run.tick("start")
        if flow is not None:
            run.say(f"flow: {flow.describe()}")
            for line in flow.configure(base):
                run.say(line)
        if o.calibration_s > 0 and flow is None and not interrupts.stop_load.is_set():
            count = o.calibration_jobs or pacing.calibration_size(capacity, o.calibration_s)
            idle, line = pacing.calibrate(db_url, server_env, o.job_ms, count, str(Path.cwd()),
                                          interrupts.wait, max(60.0, 20 * o.calibration_s))
            run.say(line)
        run.tick("start")
        locust_vars = {
            "FLOOD_OUT_DIR": str(run_dir.resolve()), "FLOOD_JOB_MS": str(o.job_ms),
            "FLOOD_BULK_SIZE": str(o.bulk_size), "FLOOD_RATE": str(rate),
            "FLOOD_USERS": str(o.users), "FLOOD_TIME": str(o.duration_s),
            "FLOOD_IN_FLIGHT": str(o.in_flight), **(flow.locust_env() if flow else {})}
        if flow is not None and o.alone_s > 0 and not interrupts.stop_load.is_set():
            alone = alone_phase(run, o, flow, base, run_dir, locust_vars, db_url)
        users = o.users + (1 if flow is not None else 0)  # the steady user is one more
        run.sampler = Sampler(base, db_url, run.server.pid,  # its clock starts with the load
                              token=flow.admin_token if flow else None)
        progress = Progress(None if o.ui_port is not None else o.duration_s, out)
        if not interrupts.stop_load.is_set():
            load_start = pacing.db_now(db_url)
            locust_env = procs.child_env(locust_vars)
            argv = procs.locust_argv(o.scenario, base, run_dir / "locust", users,
                                     o.spawn_rate, o.duration_s, o.ui_port, o.locust_processes)
            run.locust = procs.start_locust(argv, locust_env, run_dir / "locust.log",
                                            o.locust_nice, o.locust_cpus)
            if o.ui_port is not None:
                procs.wait_http(f"http://127.0.0.1:{o.ui_port}/", run.locust,
                                interrupts.stop_load.is_set)
                run.say(f"Locust web UI: http://127.0.0.1:{o.ui_port}  (API {base}); Ctrl-C "
                        "ends the run, drains and verifies")
            door = _start_probe(o, base, run_dir, flow)
            try:
                run.load_phase(progress)
            finally:
                probed = door.stop() if door is not None else None
        run.tick("load")  # a signal that came as the load was about to start stopped it
        load_end = pacing.db_now(db_url)
        if flow is not None:
            lifted = flow.after_load(base)
            if lifted:
                run.say(lifted)
        if run.hosts is not None:
            run.notes += run.hosts.check_alive()
        if interrupts.abort_drain.is_set():
            run.say("the drain is skipped (second signal)")
        else:
            drained = run.drain_phase(db_url, progress)
        progress.end()
        (run_dir / "server_metrics.prom").write_text(run.sampler.last_metrics)
    except (HostsError, RuntimeError) as exc:  # a child that would not start
        if isinstance(exc, FloodError):
            raise
        raise FloodError(str(exc)) from exc
    finally:
        server_code = run.stop_all()
        if run.sampler is not None:
            run.sampler.close()
            _write_samples(run_dir / "server_samples.csv", run.sampler)
    run.tick("verify")
    acked = read_acked(run_dir) + read_acked(run_dir / "alone")
    verdict = verify(db_url, acked, o.fresh_db, drained, exclude_name=pacing.CALIBRATION_NAME)
    tally = read_tallies(run_dir)
    pace = (pacing.measure_flood(db_url, load_end, idle, capacity, o.pace_threshold)
            if load_end is not None else pacing.Pace(idle, None, capacity, o.pace_threshold))
    budget = settings.db_connections * (1 + o.extra_workers)
    summary = summarize(o, verdict, tally, run.sampler, capacity, rate, pace, budget)
    summary.update(drained=drained, server_exit_code=server_code,
                   unexpected_statuses=unexpected_statuses(summary["statuses"]),
                   interrupted_by=interrupts.names or None)
    extra_lines = []
    if run.hosts is not None:
        hosts = run.hosts.as_dict()
        hosts["attempts_by_process"] = run.hosts.owners(db_url)
        summary["hosts"] = hosts
        by = ", ".join(f"{k} {v['attempts']:,} ({v['owner_ids']} owner ids)"
                       for k, v in sorted(hosts["attempts_by_process"].items()))
        extra_lines.append(f"attempts by process: {by or 'unknown'}")
        extra_lines += run.hosts.notes
    failures = _failures(summary, verdict, pace, run.notes)
    if probed is not None:
        summary["door_probe"] = probed.as_dict()
        extra_lines.append(probed.line(o.refusal_p99_ms, o.accepted_p99_ms))
        failures += probed.failures(o.refusal_p99_ms, o.accepted_p99_ms)
    if flow is not None:
        flow_verdict = (flow.measure(db_url, alone, load_start, load_end)
                        if load_start is not None and load_end is not None else None)
        if flow_verdict is None:
            failures.append("the flood did not run: no flow verdict")
        else:
            summary["flow"] = flow_verdict.as_dict() | {"phases": _phases(alone, load_start,
                                                                            load_end)}
            extra_lines += flow_verdict.lines()
            failures += flow_verdict.failures()
        origin = alone[0] if alone else load_start
        _write_completions(run_dir / "queue_completions.csv", db_url, origin)
        if isinstance(flow, WorkflowPlan) and origin is not None:
            write_graphs(run_dir / "workflow_graphs.csv", db_url, origin, pacing.db_now(db_url))
    summary["passed"], summary["failures"] = not failures, failures
    meta["result"] = summary
    meta["verdict"] = verdict.as_dict()
    (run_dir / "run.json").write_text(json.dumps(meta, indent=2, default=str))
    if not failures:
        for path in [*run_dir.glob("acked-*.txt"), *run_dir.glob("alone/acked-*.txt")]:
            path.unlink()  # thousands of ids; kept only when something is wrong
    print_summary(summary, verdict, pace, run_dir, out, extra_lines)
    return FloodResult(run_dir, not failures, summary)


def _start_probe(o: FloodOptions, base: str, run_dir: Path, flow: flows.FlowPlan | None
                 ) -> probe.DoorProbe | None:
    """The door probe (loadtests/probe.py) beside the load; not in the flow scenarios, which
    time their own steady queue and whose default queue it would add to."""
    if o.probe_rate <= 0 or flow is not None:
        return None
    kind, payload = ("sleep", {"ms": o.job_ms}) if o.job_ms else ("noop", {})
    door = probe.DoorProbe(base, run_dir, payload, kind, o.probe_rate)
    door.start()
    return door


def _phases(alone: tuple[datetime, datetime] | None, load_start: datetime | None,
            load_end: datetime | None) -> dict[str, float | None]:
    """Phase edges in seconds from the first phase's start (the per-queue figure)."""
    origin = alone[0] if alone else load_start
    def sec(t: datetime | None) -> float | None:
        return None if t is None or origin is None else round((t - origin).total_seconds(), 2)
    return {"alone_end": sec(alone[1]) if alone else None, "load_start": sec(load_start),
            "load_end": sec(load_end)}


def _write_completions(path: Path, db_url: str, origin: datetime | None) -> None:
    if origin is None:
        return
    rows = flows.completions_per_second(db_url, origin, pacing.CALIBRATION_NAME)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["second", "queue", "finished"])
        writer.writeheader()
        writer.writerows(rows)


def _failures(summary: dict[str, Any], verdict: Any, pace: pacing.Pace, notes: list[str]
              ) -> list[str]:
    failures = list(notes)
    if verdict.lost:
        failures.append(f"LOST {verdict.lost} acknowledged jobs (e.g. ids "
                        f"{verdict.lost_examples})")
    if summary["unexpected_statuses"]:
        failures.append(f"answers other than 2xx/429/503: {summary['unexpected_statuses']}")
    if not summary["drained"]:
        failures.append("the queue did not drain" + (
            f" (the drain was aborted; {verdict.pending:,} acknowledged jobs still waiting, "
            f"{verdict.missing} missing)" if summary.get("interrupted_by") else
            " within --drain-timeout"))
    if verdict.acknowledged == 0:
        failures.append("the API acknowledged no job at all")
    if pace.too_slow and pace.ratio is not None:
        failures.append(f"processing under flood = {pace.ratio:.2f} x idle, under the "
                        f"threshold {pace.threshold:.2f} (--pace-threshold)")
    return failures


def _options_dict(o: FloodOptions) -> dict[str, Any]:
    out = asdict(o)
    out["out_root"] = str(o.out_root)
    out.pop("database_url", None)
    return out
