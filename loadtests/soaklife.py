"""`boundq soak-life`: a steady open-loop load at a share of the workers' capacity for an
hour (by default) while history grows to millions of rows, with retention on, then off,
then the xmin horizon pinned by an idle-in-transaction session, then released.

1. PostgreSQL: DATABASE_URL, or the embedded cluster (durable settings).
2. Calibration: a backlog of the run's job drained by `boundq worker` with the run's
   settings in a database of its own, its pace read from the database; the load offered
   is --load-share (half) of it, unless --rate gives it.
3. A fresh database `boundq_soaklife`; `boundq worker` processes with RETENTION_SECONDS
   and FAILED_RETENTION_SECONDS set; the producer thread (plain INSERTs every 100 ms).
4. The phases on a grid of intervals (soaklife_plan.py). Between retention-on and
   retention-off new workers without retention start, and once they listen the old ones
   get SIGTERM (no gap in the claims). The pressure phase opens the pinning session at its
   start and its end releases it.
5. After each interval, its row from the database (soaklife_sample.py), a progress line.
6. The producer stops, the workers drain what is left (one more row, phase `drain`),
   the workers stop; the database's totals; the verdict (soaklife_verdict.py); run.json
   and figures in reports/runs/<timestamp>-soak-life/.

The first SIGINT or SIGTERM ends the load early (the drain and the verdict still run, the
verdict fails as interrupted); a second one skips the drain.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import psycopg

from boundq.core import dbadmin
from boundq.core.config import load_settings
from boundq.core.migrate import migrate
from boundq.core.pgembed import resolve_database_url
from boundq.core.runinfo import run_metadata, timestamp
from boundq.loadtests import soaklife_output as output
from boundq.loadtests.signals import Interrupts
from boundq.loadtests.soaklife_calibration import calibrate, worker_env
from boundq.loadtests.soaklife_load import Producer, WorkerSet, XminPin, job_of, wait_listening
from boundq.loadtests.soaklife_machine import MACHINE_COLUMNS, MachineReadings
from boundq.loadtests.soaklife_plan import (
    DRAIN,
    PRESSURE,
    RECOVERY,
    RETENTION_OFF,
    Plan,
    SoakOptions,
    make_plan,
)
from boundq.loadtests.soaklife_sample import (
    SLICE_S,
    FinishedTally,
    connect,
    queue_empty,
    read_state,
    sample,
    server_now,
)
from boundq.loadtests.soaklife_verdict import Verdict, judge
from boundq.reports.dbwatch import REPORT_APP

SOAK_DB = "boundq_soaklife"


class SoakError(RuntimeError):
    """A run that could not start or continue (not one that ran and failed its targets)."""


@dataclass
class SoakResult:
    run_dir: Path
    verdict: Verdict
    rows: list[dict[str, Any]]


class SoakRun:
    """One run's moving parts and its clock: interval k spans [start + k I, start +
    (k+1) I) on the server's clock, mapped once onto this process's monotonic clock."""

    def __init__(self, o: SoakOptions, plan: Plan, db_url: str, run_dir: Path, rate: float,
                 job_ms: int, out: TextIO, interrupts: Interrupts) -> None:
        self.o, self.plan, self.db_url, self.run_dir = o, plan, db_url, run_dir
        self.rate, self.job_ms, self.out, self.interrupts = rate, job_ms, out, interrupts
        self.conn = connect(db_url, REPORT_APP)
        self.workers: list[WorkerSet] = []
        self.pin = XminPin(db_url)
        self.producer: Producer | None = None
        self.csv = output.IntervalCsv(run_dir / output.CSV_NAME)
        self.events: dict[int, list[str]] = {}
        self.sent_at: dict[int, int] = {}
        self.start = datetime.min
        self.mono0 = 0.0
        self.read_until = 0  # intervals read so far
        self.finished = FinishedTally()  # the interval being read, slice by slice
        self.read_to_s = 0.0  # finished rows are read up to this offset from the start
        self.machine = MachineReadings()
        self.drained = False

    # --- clock ---------------------------------------------------------------------------
    def at(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index * self.plan.interval_s)

    def wait_until(self, offset_s: float) -> bool:
        """Sleep until `offset_s` after the start; False when a signal says stop."""
        left = self.mono0 + offset_s - time.monotonic()
        return not (left > 0 and self.interrupts.wait(left)) and \
            not self.interrupts.stop_load.is_set()

    def next_slice_end(self) -> float:
        """Where the next slice of finished rows ends: SLICE_S on, or the end of the
        interval it is in, whichever comes first (an offset from the start)."""
        interval = self.plan.interval_s
        ends = (math.floor(self.read_to_s / interval + 1e-9) + 1) * interval
        return min(self.read_to_s + SLICE_S, ends)

    def read_slices(self, upto_s: float) -> None:
        """Finished rows from read_to_s up to `upto_s` (an offset from the start), slice
        by slice."""
        while upto_s - self.read_to_s > 1e-6:
            upto = min(upto_s, self.next_slice_end())
            self.finished.read(self.conn, self.start + timedelta(seconds=self.read_to_s),
                               self.start + timedelta(seconds=upto))
            self.read_to_s = upto

    def wait_reading(self, offset_s: float) -> bool:
        """wait_until(offset_s), reading each slice of finished rows on the way, settle_s
        after its end."""
        while True:
            upto = self.next_slice_end()
            if upto + self.plan.settle_s > offset_s:
                return self.wait_until(offset_s)
            if not self.wait_until(upto + self.plan.settle_s):
                return False
            self.read_slices(upto)

    # --- processes -----------------------------------------------------------------------
    def spawn_workers(self, retention: bool) -> WorkerSet:
        """Always on the main thread: a worker dies with the thread that forked it
        (PR_SET_PDEATHSIG is per thread), and the phase thread ends with the load."""
        env = worker_env(self.o, self.db_url, self.plan.retention_s if retention else None)
        label = "workers-retention-on" if retention else "workers-retention-off"
        workers = WorkerSet(env, self.run_dir / f"{label}.log", self.o.processes).start()
        self.workers.append(workers)
        return workers

    def wait_ready(self, workers: WorkerSet) -> None:
        listening = sum(len(w.procs) for w in self.workers if not w.exited())
        with connect(self.db_url, REPORT_APP) as conn:  # its own: it runs beside a reading
            wait_listening(conn, workers, listening)

    def note(self, index: int, text: str) -> None:
        self.events.setdefault(index, []).append(text)

    def now_index(self) -> int:
        """The interval running now."""
        return int((time.monotonic() - self.mono0) // self.plan.interval_s)

    def begin_phase(self, index: int, pool: ThreadPoolExecutor,
                    actions: list[Future[None]]) -> None:
        """The action of the phase starting at `index`, if one does. The pin and its
        release take milliseconds and mark the phase's bounds: here, between readings.
        A restart takes seconds: its new workers are forked here, the wait for them and
        the old ones' stop run on the phase thread."""
        phase = self.plan.starts(index)
        if phase is None:
            return
        if phase.name == RETENTION_OFF:
            self.note(index, "workers restarted without retention")
            old = self.workers[-1]
            spawned = self.spawn_workers(retention=False)
            actions.append(pool.submit(self.replace_workers, old, spawned))
        elif phase.name == PRESSURE:
            self.note(index, self.pin.hold())
        elif phase.name == RECOVERY:
            self.note(index, self.pin.release())

    def replace_workers(self, old: WorkerSet, new: WorkerSet) -> None:
        self.wait_ready(new)
        codes = old.stop()
        # Rows that finished before this may still go (the old workers swept them);
        # from the next interval on, every finished row is kept.
        self.note(self.now_index(), "workers with retention stopped")
        if any(codes):
            raise SoakError(f"a worker with retention exited with {codes}")

    # --- the run -------------------------------------------------------------------------
    def run(self) -> None:
        """Each interval's state is read as it ends, before the next phase's action; its
        completions settle_s later, when the statements committing at its end are in."""
        self.wait_ready(self.spawn_workers(retention=self.plan.phases[0].retention))
        before = time.monotonic()
        self.start = server_now(self.conn)
        self.mono0 = (before + time.monotonic()) / 2
        self.machine.stop()
        self.machine = MachineReadings().start()  # the first interval's waits start here
        self.producer = Producer(self.db_url, self.rate, self.job_ms, self.o.fail_share)
        self.producer.start()
        self.sent_at[0] = 0
        self.note(0, "warm-up (not judged)")
        # A restart (seconds) waits on a thread of its own, beside the readings: an
        # interval's reading must not wait (retention deletes its rows), nor the next
        # interval's start, nor the pin.
        actions: list[Future[None]] = []
        with ThreadPoolExecutor(1, thread_name_prefix="soak-life-phase") as pool:
            for index in range(1, self.plan.intervals + 1):
                if not self.wait_reading(index * self.plan.interval_s):
                    break
                self.sent_at[index] = self.producer.sent
                state = read_state(self.conn, self.o.waiting_deadline_s) | self.machine.reading()
                if index < self.plan.intervals:
                    self.begin_phase(index, pool, actions)
                if not self.wait_reading(index * self.plan.interval_s + self.plan.settle_s):
                    break
                self.read(index - 1, state)
                if self.workers[-1].exited():
                    raise SoakError(f"boundq worker exited with {self.workers[-1].exited()}")
                for done in [a for a in actions if a.done()]:
                    actions.remove(done)
                    done.result()  # raises what the action raised
        for action in actions:
            action.result()

    def read(self, index: int, state: dict[str, Any], end: datetime | None = None,
             phase: str | None = None) -> None:
        start_t, end_t = self.at(index), end or self.at(index + 1)
        seconds = (end_t - start_t).total_seconds()
        self.read_slices((index + 1) * self.plan.interval_s if end is None
                         else (end - self.start).total_seconds())
        finished, self.finished = self.finished, FinishedTally()
        name = phase or self.plan.phase_of(index).name
        offered = (self.sent_at.get(index + 1, 0) - self.sent_at.get(index, 0)
                   if phase is None else 0)
        row: dict[str, Any] = {
            "interval": index, "phase": name,
            "retention": int(phase is None and self.plan.phase_of(index).retention),
            "t_start_s": round(index * self.plan.interval_s, 3),
            "t_end_s": round((end_t - self.start).total_seconds(), 3),
            "offered": offered,
            "offered_per_s": round(offered / seconds, 2) if seconds > 0 else None,
            "event": "; ".join(self.events.get(index, [])),
            **sample(finished, seconds, state),
            **{column: state.get(column) for column in MACHINE_COLUMNS}}
        self.csv.add(row)
        self.read_until = index + 1
        output.say(self.out, output.progress_line(row, self.plan.intervals))

    def drain(self) -> None:
        """The producer stops; the workers finish what waits; one row from the end of
        the last interval read to now."""
        assert self.producer is not None
        self.producer.stop()
        if self.pin.conn is not None:  # the load ended inside the pressure phase
            self.note(self.read_until, self.pin.release())
        deadline = time.monotonic() + self.o.drain_timeout_s
        while not queue_empty(self.conn):
            if time.monotonic() > deadline or self.interrupts.wait_drain(0.5):
                break
        else:
            self.drained = True
        end = server_now(self.conn)
        state = read_state(self.conn, self.o.waiting_deadline_s) | self.machine.reading()
        time.sleep(self.plan.settle_s)
        self.read(self.read_until, state, end=end, phase=DRAIN)

    def stop(self) -> None:
        self.machine.stop()
        if self.producer is not None and self.producer.is_alive():
            self.producer.stop()
        if self.pin.conn is not None:
            self.pin.release()
        for workers in self.workers:
            workers.stop()
        self.csv.close()


def run_soak(o: SoakOptions, out: TextIO | None = None,
             interrupts: Interrupts | None = None) -> SoakResult:
    own = interrupts is None
    signals = interrupts or Interrupts().install()
    try:
        return _run_soak(o, out or sys.stdout, signals)
    finally:
        if own:
            signals.restore()


def _run_soak(o: SoakOptions, out: TextIO, interrupts: Interrupts) -> SoakResult:
    plan = make_plan(o)
    job_ms = o.job_ms
    base = resolve_database_url(o.database_url or load_settings().database_url)
    run_dir = o.out_root / f"{timestamp()}-soak-life"
    run_dir.mkdir(parents=True, exist_ok=False)
    calibration: dict[str, Any] | None = None
    rate = o.rate
    if rate is None:
        output.say(out, f"calibration: draining {o.calibration_jobs:,} jobs with "
                        f"MAX_CONCURRENT_JOBS={o.max_concurrent_jobs} NUM_WORKERS="
                        f"{o.num_workers} x {o.processes} processes ...")
        calibration = calibrate(base, o)
        rate = calibration["jobs_per_s"] * o.load_share
        output.say(out, f"calibration: {calibration['jobs_per_s']:,.0f} jobs/s; offering "
                        f"{rate:,.0f} jobs/s ({o.load_share:.0%})")
    db_url = dbadmin.fresh_database(base, SOAK_DB)
    asyncio.run(migrate(db_url))
    meta: dict[str, Any] = {
        "kind": "soak-life", **run_metadata(db_url), "options": o.as_dict(),
        "plan": plan.as_dict(), "calibration": calibration, "rate_per_s": rate,
        "job": job_of(job_ms)[0], "database": SOAK_DB}
    output.write_json(run_dir / "run.json", meta)
    pg = meta["postgres"]
    output.say(out, f"boundq soak-life: {plan.intervals} intervals of {plan.interval_s:g} s "
               f"({', '.join(f'{p.name} {p.intervals}' for p in plan.phases)}); "
               f"{rate:,.0f} {meta['job']} jobs/s ({o.fail_share:.0%} `fail`); "
               f"RETENTION_SECONDS={plan.retention_s:g}; "
               f"PostgreSQL {pg.get('server_version')} fsync={pg.get('fsync')} "
               f"synchronous_commit={pg.get('synchronous_commit')}; {run_dir}")
    run = SoakRun(o, plan, db_url, run_dir, rate, job_ms, out, interrupts)
    completed = False
    try:
        run.run()
        completed = run.read_until >= plan.intervals
        interrupts.announce("load", out)
        if interrupts.abort_drain.is_set():
            output.say(out, "the drain is skipped (second signal)")
        else:
            run.drain()
    except (RuntimeError, psycopg.Error) as exc:
        raise SoakError(str(exc)) from exc
    finally:
        run.stop()
    with connect(db_url, REPORT_APP) as conn:
        totals = output.accounting(conn)
    produced = run.producer.sent if run.producer else 0
    interrupted = bool(interrupts.names) or not completed
    verdict = judge(run.csv.rows, plan, o.tolerance, o.flat_ratio, produced, run.drained,
                    interrupted)
    meta.update(produced=produced, produced_failing=run.producer.failing if run.producer
                else 0, producer_errors=run.producer.errors if run.producer else [],
                totals=totals, verdict=verdict.as_dict(), interrupted_by=interrupts.names)
    output.write_json(run_dir / "run.json", meta)
    if o.figures:
        from boundq.reports.soaklife_figures import write_soak_figures

        figures = write_soak_figures(run_dir)
        output.say(out, f"figures: {', '.join(p.name for p in figures)}")
    for line in verdict.lines:
        output.say(out, line)
    output.say(out, f"retention deleted {totals['deleted_by_retention']:,} jobs; "
                    f"{totals['job_rows']:,} rows left")
    output.say(out, ("PASSED" if verdict.passed else "FAILED: " + "; ".join(verdict.failures))
               + f"  ({run_dir})")
    return SoakResult(run_dir, verdict, run.csv.rows)
