"""One run against one fresh database: worker processes behind fault proxies, the client
that enqueues and logs, the faults, the drain after healing, and the history check.

Workers are real `boundq worker` processes (`python -m boundq worker`, or a broken
variant's entry point) started from the repo root; each reaches PostgreSQL only through
its own FaultProxy, so its network can be cut alone. The harness itself talks to
PostgreSQL directly (application_name boundq-harness, never terminated by the faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg

import invariants.handlers  # noqa: F401 - registers the test kinds for validation
from boundq.core import flow, queue, schedules
from boundq.core.config import load_settings
from boundq.core.cron import NEVER, validate_schedule
from boundq.core.errors import BoundqError
from boundq.core.faultproxy import FaultProxy, Mode, ProxyHost
from boundq.core.handlers import default_registry
from boundq.core.validation import validate_job
from invariants import history as hist
from invariants.checker import History, InvariantViolation, Process, Report, check
from invariants.cluster import Cluster
from invariants.profile import WORKER_ENV, Profile, Stats
from invariants.variants import Variant

REPO = Path(__file__).resolve().parent.parent
_T = TypeVar("_T")
# The queue of the cron keeper worker (Harness._keep_cron_keeper): no job is ever put in it.
CRON_KEEPER_QUEUE = "harness-cron-keeper"
_ENV_DROP = ("DATABASE_URL", "BOUNDQ_HANDLERS", "BOUNDQ_CRASH_AT", "BOUNDQ_LOSE_ANSWER",
             "BOUNDQ_LOSE_ANSWER_HOLD_S", "WORKER_PROCESSES",
             "MAX_DB_CONNECTIONS")


@dataclass
class Context:
    """Session-wide: the cluster, the proxy thread, the profile, tallies, artifact folder."""

    cluster: Cluster
    proxies: ProxyHost
    profile: Profile
    stats: Stats
    artifacts: Path
    workroot: Path


@dataclass
class WorkerProc:
    index: int
    popen: subprocess.Popen[bytes]
    proxy: FaultProxy
    concurrency: int
    db_connections: int
    log_path: Path
    crash_at: str | None = None
    clock_skew_s: float = 0.0
    partitioned: str | None = None
    signals: list[str] = field(default_factory=list)
    serves_jobs: bool = True  # False: the cron keeper (Harness._keep_cron_keeper)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def healthy(self) -> bool:
        """Alive, asked to keep running, and started without a crash point or skew."""
        return (self.alive and not self.crash_at and not self.clock_skew_s
                and not {"SIGTERM", "SIGKILL"} & set(self.signals))

    def describe(self) -> dict[str, Any]:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-40:]
        except OSError:
            tail = []
        return {"index": self.index, "pid": self.pid, "returncode": self.popen.poll(),
                "concurrency": self.concurrency, "db_connections": self.db_connections,
                "crash_at": self.crash_at, "clock_skew_s": self.clock_skew_s,
                "signals": self.signals, "log_tail": tail}


class Harness:
    def __init__(self, ctx: Context, variant: Variant, label: str) -> None:
        self.ctx = ctx
        self.variant = variant
        self.label = label
        self.db = ctx.cluster.clone()
        self.url = ctx.cluster.url(self.db)
        self.workdir = ctx.workroot / f"{label}-{self.db}"
        self.workdir.mkdir(parents=True)
        self.client_log = hist.ClientLog(self.workdir / "creates.jsonl")
        self.faults: list[dict[str, Any]] = []
        self.workers: list[WorkerProc] = []
        self.schedules: list[str] = []  # names put, in order
        self.retired: dict[str, datetime] = {}  # name -> its watermark when retired
        self.healed_at: datetime | None = None
        self.holder: psycopg.Connection[Any] | None = None  # hold_snapshot's session
        self._names = 0
        self._loop = asyncio.new_event_loop()
        for statement in variant.db_prepare:
            self.sql(statement)

    # --- plumbing --------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self._loop.run_until_complete(coro)

    def sql(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                             application_name="boundq-harness") as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=5, application_name="boundq-harness")

    def fault(self, kind: str, **detail: Any) -> None:
        at: str | None = None
        with contextlib.suppress(psycopg.Error):
            at = str(self.sql("SELECT now()")[0][0])
        self.faults.append({"kind": kind, "db_time": at, "wall": time.time(), **detail})
        self.ctx.stats.faults[kind] += 1

    # --- workers ---------------------------------------------------------------------------
    def start_worker(self, concurrency: int = 2, crash_at: str | None = None,
                     clock_skew_s: float = 0.0, **env_overrides: str) -> WorkerProc:
        proxy = self.ctx.proxies.add(lambda: self.ctx.cluster.port)
        query = {"sslmode": "disable", "gssencmode": "disable", "connect_timeout": "3"}
        options = self.variant.options(clock_skew_s)
        if options:
            query["options"] = options
        url = (f"postgresql://postgres@127.0.0.1:{proxy.port}/{self.db}?"
               + urllib.parse.urlencode(query, quote_via=urllib.parse.quote))
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        env.update(WORKER_ENV)
        env.update({"DATABASE_URL": url, "MAX_CONCURRENT_JOBS": str(concurrency),
                    "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
        env.update(env_overrides)
        if crash_at:
            env["BOUNDQ_CRASH_AT"] = crash_at
        settings = load_settings({k: v for k, v in env.items() if k.isupper()}, dotenv=None)
        index = len(self.workers)
        log_path = self.workdir / f"worker-{index}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(self.variant.worker_argv(), cwd=REPO, env=env,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        worker = WorkerProc(index, popen, proxy, concurrency, settings.db_connections, log_path,
                            crash_at, clock_skew_s)
        self.workers.append(worker)
        if crash_at:
            self.ctx.stats.faults[f"crash_point:{crash_at}"] += 1
        return worker

    def wait_ready(self, worker: WorkerProc, timeout_s: float = 30) -> None:
        """Until the worker holds its pool and LISTEN connections (start-up is over)."""
        deadline = time.monotonic() + timeout_s
        while self.ctx.proxies.stats(worker.proxy)["open"] < 3:
            if not worker.alive or time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.index} did not start: "
                                     f"{worker.describe()['log_tail'][-5:]}")
            time.sleep(0.05)

    def signal(self, worker: WorkerProc, sig: signal.Signals) -> bool:
        if not worker.alive:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, sig)
        worker.signals.append(sig.name)
        self.fault(sig.name.lower(), worker=worker.index)
        return True

    def zombie(self, worker: WorkerProc, pause_s: float) -> None:
        """SIGSTOP past the lease, then SIGCONT: its late writes must be fenced."""
        if not worker.alive:
            return
        try:
            os.kill(worker.pid, signal.SIGSTOP)
        except ProcessLookupError:  # died just now (a poison job, a crash point)
            return
        self.fault("sigstop", worker=worker.index, pause_s=pause_s)
        time.sleep(pause_s)
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGCONT)

    def partition(self, worker: WorkerProc, mode: Mode) -> None:
        self.ctx.proxies.set_mode(worker.proxy, mode)
        worker.partitioned = str(mode)
        self.fault(f"partition_{mode}", worker=worker.index)

    def heal(self, worker: WorkerProc, how: str = "resume") -> None:
        self.ctx.proxies.heal(worker.proxy, how)
        worker.partitioned = None

    def pg_restart(self, down_s: float = 0.0) -> None:
        self.fault("pg_crash_restart", down_s=down_s)
        self.ctx.cluster.crash_restart(down_s)

    def terminate(self, target: str) -> int:
        apps = {"listener": ("boundq-listener",), "pool": ("boundq-worker",),
                "all": ("boundq-worker", "boundq-listener")}[target]
        n = self.ctx.cluster.terminate(self.db, apps)
        self.fault(f"terminate_{target}", backends=n)
        return n

    def advance_reaper(self) -> dict[int, str]:
        async def reap() -> dict[int, str]:
            async with await self._connect() as conn:
                return await self.variant.reaper(conn)

        self.fault("reaper_pass")
        return self.run(reap())

    # --- a held snapshot -----------------------------------------------------------------
    def hold_snapshot(self) -> bool | None:
        """A session left idle in a transaction whose snapshot holds the xmin horizon (a
        forgotten BEGIN): while it lasts, claims start at their floors (core/floors.py).
        A restart of PostgreSQL ends it; holding again opens a new one. True: a new one
        holds; False: one held already; None: an outage, nothing held."""
        if self.holder is not None and not self.holder.closed:
            with contextlib.suppress(psycopg.Error):
                self.holder.execute("SELECT 1")  # still there after restarts and kills?
                return False
            self.release_snapshot()
        try:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5,
                                   application_name="boundq-harness-holder")
            conn.execute("SET idle_in_transaction_session_timeout = 0")
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SELECT 1")
        except psycopg.Error:
            return None  # an outage: nothing held
        self.holder = conn
        self.fault("snapshot_held")
        return True

    def release_snapshot(self) -> None:
        if self.holder is None:
            return
        with contextlib.suppress(psycopg.Error):
            self.holder.close()
        self.holder = None
        self.fault("snapshot_released")

    def backfill(self, queue_name: str, hours_ago: float = 1.0) -> list[int]:
        """A job whose run_at is long past (a backfill): below every claim floor."""
        try:
            now = self.sql("SELECT now()")[0][0]
        except psycopg.Error:
            return []  # an outage: nothing was sent
        return self.enqueue([self.job(queue=queue_name,
                                      run_at=(now - timedelta(hours=hours_ago)).isoformat())])

    # --- client ----------------------------------------------------------------------------
    def job(self, kind: str = "noop", payload: dict[str, Any] | None = None,
            **fields: Any) -> dict[str, Any]:
        self._names += 1
        name = f"{self.label}-{self._names}"
        return {"name": name, "kind": kind, "payload": _name_chain(payload or {}, name),
                **fields}

    def enqueue(self, items: list[dict[str, Any]]) -> list[int]:
        """Create jobs (one: queue.enqueue; many: queue.enqueue_many) and log the outcome:
        ok with ids, or info (the request may or may not have committed)."""
        settings = load_settings(WORKER_ENV, dotenv=None)
        specs = [validate_job(item, default_registry, settings) for item in items]
        names = [item["name"] for item in items]

        async def go() -> list[int]:
            async with await self._connect() as conn:
                if len(specs) == 1:
                    row, _ = await queue.enqueue(conn, specs[0])
                    return [int(row["id"])]
                return await queue.enqueue_many(conn, specs)

        try:
            ids = self.run(go())
        except (psycopg.Error, OSError, BoundqError) as exc:
            self.client_log.append("info", names)
            self.faults.append({"kind": "create_indeterminate", "error": repr(exc)})
            return []
        except (AssertionError, RuntimeError) as exc:  # boundq's own error: keep and fail
            self.client_log.append("fail", names)  # its transaction rolled back
            report = Report([], 0, final=False)
            path = self.save_artifact(report, None, reason=f"create raised {exc!r}")
            raise AssertionError(f"a valid create failed inside boundq: {exc!r}; "
                                 f"history kept at {path}") from exc
        self.client_log.append("ok", names, ids)
        return ids

    def put_schedule(self, every_s: int, catch_up: int = 1, timezone: str = "UTC",
                     job: dict[str, Any] | None = None) -> str:
        """A schedule ticking every `every_s` seconds. The public API takes five fields
        (minutes); the harness asks core for croniter's sixth, seconds, field so a run of a
        few seconds sees many ticks. Everything past validation is the production path."""
        name = f"{self.label}-cron{len(self.schedules)}"
        body = {"cron": f"* * * * * */{every_s}", "timezone": timezone, "catch_up": catch_up,
                "job": job or {"kind": "noop"}}
        spec = validate_schedule(name, body, default_registry,
                                 load_settings(WORKER_ENV, dotenv=None), seconds=True)

        async def go() -> None:
            async with await self._connect() as conn:
                await schedules.put(conn, spec)

        self.run(go())
        self.schedules.append(name)
        self.faults.append({"kind": "put_schedule", "name": name, "every_s": every_s,
                            "catch_up": catch_up, "wall": time.time()})
        return name

    def retire_schedules(self) -> None:
        """Stop the schedules from ticking (so the drain can end), as a PUT would: bump the
        version under the row lock and move the watermark to never, keeping the one each
        had for the check. Any fire that read them before changes nothing after this."""
        rows = self.sql(
            "UPDATE job_schedules AS s SET next_tick_at = %s, version = s.version + 1 "
            "FROM (SELECT name, next_tick_at FROM job_schedules WHERE next_tick_at < %s "
            "      FOR UPDATE) AS old WHERE s.name = old.name "
            "RETURNING s.name, old.next_tick_at", (NEVER, NEVER))
        self.retired.update({name: at for name, at in rows})

    def schedules_caught_up(self) -> bool:
        rows = self.sql("SELECT count(*) FROM job_schedules WHERE next_tick_at <= now()")
        return int(rows[0][0]) == 0

    def cancel(self, job_id: int) -> bool:
        async def go() -> bool:
            async with await self._connect() as conn:
                try:
                    await queue.cancel(conn, job_id)
                except BoundqError:  # already terminal, or no such job: nothing to do
                    return False
                return True

        self.fault("cancel", job_id=job_id)
        return self.run(go())

    def set_limits(self, scope: str, name: str, body: dict[str, Any]) -> bool:
        """PUT a queue's or a kind's flow settings (core/flow.py, as the API does)."""
        settings = flow.parse_settings(body, weighted=scope == "queue")
        put = flow.put_queue if scope == "queue" else flow.put_kind

        async def go() -> None:
            async with await self._connect() as conn:
                await put(conn, name, settings)

        self.fault("set_limits", scope=scope, name=name, **body)
        try:
            self.run(go())
        except (psycopg.Error, OSError) as exc:  # saved or not, stamped or not: the checker
            self.faults.append({"kind": "limits_indeterminate", "error": repr(exc)})
            return False                          # reads what the table holds
        return True

    def clear_limits(self, attempts: int = 5) -> None:
        """Before the drain: no limit or pause may hold jobs back from settling."""
        for _ in range(attempts):
            try:
                held = self.sql(
                    "SELECT 'queue', name FROM job_queues WHERE concurrency IS NOT NULL "
                    "OR rate_per_s IS NOT NULL OR paused UNION ALL "
                    "SELECT 'kind', name FROM job_kinds WHERE concurrency IS NOT NULL "
                    "OR rate_per_s IS NOT NULL OR paused")
            except psycopg.Error:
                time.sleep(0.5)
                continue
            if all([self.set_limits(str(scope), str(name), {}) for scope, name in held]):
                return
        raise AssertionError("could not clear the flow limits before the drain")

    def processing_ids(self) -> list[int]:
        return [r[0] for r in self.sql("SELECT id FROM jobs WHERE status = 'processing' "
                                       "ORDER BY id")]

    def acked_ids(self) -> list[int]:
        return sorted({i for c in self.client_log.read() if c.result == "ok" for i in c.ids})

    # --- recovery --------------------------------------------------------------------------
    def heal_all(self) -> None:
        if not self.ctx.cluster.running():
            self.ctx.cluster.pg.start()
        for w in self.workers:
            if w.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGCONT)
            if w.partitioned:
                self.heal(w)

    def unsettled(self) -> int:
        row = self.sql("SELECT count(*) FROM jobs WHERE finished_at IS NULL")  # not terminal
        return int(row[0][0])

    def drain(self, timeout_s: float, keep: int = 2) -> bool:
        """Keep `keep` healthy workers running (poison jobs kill theirs) until every job
        is terminal or the recovery bound passes. Schedules first catch up (their
        schedulers run in those workers; within the same bound, counted apart) and are
        then retired, so the jobs stop coming."""
        if self.schedules and len(self.retired) < len(self.schedules):
            self._settle_schedules(time.monotonic() + timeout_s, keep)
        deadline = time.monotonic() + timeout_s
        while True:
            self._keep_healthy(keep)
            with contextlib.suppress(psycopg.OperationalError):
                if self.unsettled() == 0:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def _keep_healthy(self, keep: int) -> None:
        for _ in range(keep - sum(1 for w in self.workers if w.healthy and w.serves_jobs)):
            self.start_worker(concurrency=3)

    def _keep_cron_keeper(self) -> None:
        """One worker that serves a queue no job uses, so no poison job ever reaches it and
        its scheduler (the variant's, like every worker's) keeps running after faults heal.
        The job workers' schedulers run too, but poison jobs can kill each of them soon
        after it starts, for longer than the recovery bound on a busy machine."""
        if not any(w.alive and not w.serves_jobs for w in self.workers):
            self.start_worker(concurrency=1, QUEUES=CRON_KEEPER_QUEUE).serves_jobs = False

    def _settle_schedules(self, deadline: float, keep: int) -> None:
        """Note when faults healed, wait for every watermark to pass now() (schedulers
        caught up), then retire the schedules; late, the check says who fell behind."""
        while self.healed_at is None and time.monotonic() < deadline:
            with contextlib.suppress(psycopg.OperationalError):
                self.healed_at = self.sql("SELECT now()")[0][0]
            if self.healed_at is None:
                time.sleep(0.2)
        while True:
            self._keep_healthy(keep)
            self._keep_cron_keeper()
            with contextlib.suppress(psycopg.OperationalError):
                if self.schedules_caught_up() or time.monotonic() > deadline:
                    self.retire_schedules()
                    return
            time.sleep(0.2)

    def stop_workers(self, grace_s: float = 8.0) -> None:
        for w in self.workers:
            if w.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.pid, signal.SIGCONT)
                    os.kill(w.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.popen.wait(timeout=max(deadline - time.monotonic(), 0.01))
            if w.alive:
                w.popen.kill()
                w.popen.wait(timeout=10)

    # --- judging ---------------------------------------------------------------------------
    def processes(self) -> list[Process]:
        out = []
        for w in self.workers:
            high = int(self.ctx.proxies.stats(w.proxy)["high_water"])
            out.append(Process(w.pid, w.concurrency, w.db_connections, high))
        return out

    def history(self) -> History:
        reports = [r for w in self.workers for r in hist.read_worker_reports(w.log_path)]
        return hist.load(self.url, creates=self.client_log.read(), processes=self.processes(),
                         reports=reports, retired=self.retired, healed_at=self.healed_at)

    def check(self, final: bool) -> Report:
        """Check the history; on a violation keep it as an artifact and raise."""
        history = self.history()
        report = check(history, final=final)
        stats = self.ctx.stats
        if final:
            stats.jobs_checked += report.jobs_checked
            stats.checks += 1
            stats.schedules_checked += len(history.schedules)
            stats.ticks_checked += len(history.ticks)
            stats.chains_checked += sum(1 for j in history.jobs if j.then_name)
            for r in history.reports:
                stats.fenced[r.what] += 1
        if report.ok:
            return report
        if self.variant.broken and not report.names() & self.variant.expected:
            # Not the bug this variant plants (its drain bound is short, so on a busy
            # machine a job can be left unfinished): noted and kept once, and the search
            # goes on for the planted one, which an exception here would end.
            seen = stats.incidental.setdefault(self.variant.name, set())
            if not report.names() <= seen:
                seen.update(report.names())
                self.save_artifact(report, history, reason="not the planted bug")
            return report
        if self.variant.broken:
            stats.detected.setdefault(self.variant.name, set()).update(report.names())
        else:
            stats.violations.update(v.invariant for v in report.violations)
        path = self.save_artifact(report, history)
        raise InvariantViolation(report, str(path))

    def save_artifact(self, report: Report, history: History | None = None,
                      reason: str = "invariant violation") -> Path:
        """One JSON file per failure; the self-test's expected ones go to selftest/."""
        folder = self.ctx.artifacts / ("selftest" if self.variant.broken else "")
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        path = folder / f"{stamp}-{self.variant.name}-{self.label}.json"
        body = {
            "variant": self.variant.name, "profile": self.ctx.profile.name, "label": self.label,
            "reason": reason,
            "final": report.final, "explain": report.explain(200),
            "violations": [{"invariant": v.invariant, "job_ids": v.job_ids, "detail": v.detail}
                           for v in report.violations],
            "faults": self.faults, "workers": [w.describe() for w in self.workers],
            "history": hist.dump(history) if history is not None else None,
        }
        path.write_text(json.dumps(body, indent=1, default=str))
        if not self.variant.broken:
            self.ctx.stats.artifacts.append(str(path))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_workers(grace_s=3)
        self.release_snapshot()  # its session would keep the database from being dropped
        for w in self.workers:
            with contextlib.suppress(Exception):
                self.ctx.proxies.remove(w.proxy)
        with contextlib.suppress(Exception):
            self.heal_all()
        with contextlib.suppress(psycopg.Error):
            self.ctx.cluster.drop(self.db)
        self._loop.close()


def _name_chain(payload: dict[str, Any], root: str, depth: int = 1) -> dict[str, Any]:
    """An echo payload's follow-ups (`then`, and its own `then`) named after the root job,
    unique per run: exactly_once_chain counts each by its name."""
    then = payload.get("then")
    if not isinstance(then, dict):
        return payload
    inner = then.get("payload")
    named = {**then, "name": f"{root}>then{depth}"}
    if isinstance(inner, dict):
        named["payload"] = _name_chain(inner, root, depth + 1)
    return {**payload, "then": named}
