"""Predictability: goodput and pickup latency against offered load, from a quarter of
the capacity bound to twenty times it, boundq beside PgQueuer and procrastinate.

Every system runs the same work: `sleep` jobs of JOB_MS milliseconds, CONCURRENCY of
them at a time, so its capacity bound is CONCURRENCY x 1000 / JOB_MS jobs/s (5 x 1000 /
10 = 500/s). For each offered load (a multiple of that bound), on a fresh database:

  1. the consumer starts: `boundq worker` (NUM_WORKERS, MAX_CONCURRENT_JOBS), or a peer's
     consumer (reports/peer_consumers.py); one warm-up job must finish before the clock
     starts;
  2. an open-loop producer inserts jobs with plain SQL at the offered rate for `seconds`
     (reports/openloop.py), whatever the consumer does;
  3. the consumer keeps going for a short tail (until every job of the window has been
     claimed, or `tail` seconds), then the numbers are read from the database
     (reports/loadstats.py): goodput in the window without its warm-up, pickup p50/p99.

Past the bound a queue cannot finish more than the bound (the jobs take that long); what
tells systems apart is whether they keep finishing at the bound and how their pickup
grows. Above the bound, pickup is mostly the backlog's age and grows with the run time:
the jobs still waiting at the end count with the time they had waited (a lower bound).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from boundq.core import dbadmin
from boundq.core.migrate import migrate
from boundq.reports import dbwatch, loadstats
from boundq.reports.drain_run import worker_process
from boundq.reports.openloop import insert_once, produce
from boundq.reports.peer_consumers import consumer_process
from boundq.reports.peers import (
    pgqueuer_available,
    procrastinate_available,
    setup_pgqueuer,
    setup_procrastinate,
)

LOAD_DB = "boundq_load"
FULL_LOADS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
QUICK_LOADS = (0.5, 2.0, 10.0)
READY_TIMEOUT_S = 60.0
POLL_S = 0.2


@dataclass(frozen=True)
class LoadPlan:
    job_ms: int = 10
    concurrency: int = 5  # boundq MAX_CONCURRENT_JOBS; the peers' concurrency
    workers: int = 3  # boundq NUM_WORKERS
    seconds: float = 10.0
    warmup_fraction: float = 0.2  # of the window, left out of the numbers
    tail_s: float = 2.0

    @property
    def capacity_per_s(self) -> float:
        return self.concurrency * 1000 / self.job_ms


def systems(want_peers: bool, say: Callable[[str], None] = print) -> list[str]:
    """boundq, and each peer whose package is installed (the others are named, skipped)."""
    found = ["boundq"]
    if not want_peers:
        return found
    for name, available in (("pgqueuer", pgqueuer_available),
                            ("procrastinate", procrastinate_available)):
        if available():
            found.append(name)
        else:
            say(f"  predictability: {name} is not installed (pip install -e '.[peers]'); "
                "skipped")
    return found


def _fresh(base: str, system: str) -> str:
    url = dbadmin.fresh_database(base, LOAD_DB)
    if system == "pgqueuer":
        setup_pgqueuer(url, 0)
    elif system == "procrastinate":
        setup_procrastinate(url, 0)
    else:
        asyncio.run(migrate(url))
    return url


def _consumer(system: str, url: str, plan: LoadPlan, log: IO[bytes]) -> Any:
    if system == "boundq":
        return worker_process(url, {"NUM_WORKERS": str(plan.workers),
                                    "MAX_CONCURRENT_JOBS": str(plan.concurrency)}, stderr=log)
    return consumer_process(system, url, plan.concurrency, stderr=log)


def _poll(condition: Callable[[], bool], proc: Any, timeout_s: float, log: IO[bytes],
          what: str) -> bool:
    """Poll `condition` every 0.2 s until it holds (True) or time is up (False); the
    consumer dying meanwhile is an error."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"consumer exited with {proc.returncode} {what}: {tail}")
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def measure_point(base: str, system: str, load: float, plan: LoadPlan) -> dict[str, Any]:
    """One system at `load` x the capacity bound: a row of points-predictability.csv."""
    rate = load * plan.capacity_per_s
    url = _fresh(base, system)
    with tempfile.TemporaryFile() as log, dbwatch.connect(url) as conn, \
            _consumer(system, url, plan, log) as proc:
        asyncio.run(insert_once(system, url, 1, plan.job_ms))
        if not _poll(lambda: loadstats.finished_any(conn, system), proc, READY_TIMEOUT_S,
                     log, "before its warm-up job finished"):
            raise RuntimeError(f"{system}: the warm-up job did not finish in "
                               f"{READY_TIMEOUT_S:.0f}s")
        produced = asyncio.run(produce(system, url, rate, plan.seconds, plan.job_ms))
        w0 = produced.started_at + (produced.ended_at - produced.started_at) * plan.warmup_fraction
        w1 = produced.ended_at
        _poll(lambda: loadstats.unstarted(conn, system, w0, w1) == 0, proc, plan.tail_s, log,
              "during the run")
        stats = loadstats.point_stats(conn, system, w0, w1)
    return {"system": system, "load_x": load, "offered_per_s": rate,
            "sent_per_s": produced.sent / produced.seconds if produced.seconds > 0 else 0.0,
            "capacity_per_s": plan.capacity_per_s, "job_ms": plan.job_ms,
            "concurrency": plan.concurrency, "seconds": plan.seconds, **stats.row()}


def point_line(row: dict[str, Any]) -> str:
    """A progress line's numbers for one point."""
    bound = "≥" if row["unstarted"] > 0.01 * max(row["arrived"], 1) else ""
    return (f"goodput {row['goodput_per_s']:>7,.0f} jobs/s (bound {row['capacity_per_s']:,.0f})"
            f"  pickup p99 {bound}{row['pickup_p99_ms']:,.0f} ms")


def plan_points(base: str, loads: list[float], plan: LoadPlan, names: list[str]
                ) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """(label, measure) of every point, loads outermost so a slow spell of the machine
    hits every system at the same load alike."""
    points = []
    for load in loads:
        for system in names:
            label = f"{system} {load:g}x bound ({load * plan.capacity_per_s:,.0f} jobs/s)"
            points.append((label, _bind(base, system, load, plan)))
    return points


def _bind(base: str, system: str, load: float, plan: LoadPlan
          ) -> Callable[[], dict[str, Any]]:
    return lambda: measure_point(base, system, load, plan)

