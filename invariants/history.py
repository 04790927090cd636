"""Reading a run's history: database tables (one snapshot), the client log, worker logs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from invariants import audit
from invariants.checker import (
    Attempt,
    Create,
    Dependency,
    Effect,
    History,
    Job,
    JobEvent,
    Process,
    Transition,
    WorkerReport,
)
from invariants.cron_check import Schedule, Tick
from invariants.flow_checks import LimitChange


class ClientLog:
    """Create requests as the client saw them, one JSON line each, flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch()

    def append(self, result: str, names: Iterable[str], ids: Iterable[int] = ()) -> None:
        line = json.dumps({"op": "create", "result": result, "names": list(names),
                           "ids": list(ids)})
        with self.path.open("a") as handle:
            handle.write(line + "\n")
            handle.flush()

    def read(self) -> list[Create]:
        out = []
        for line in self.path.read_text().splitlines():
            item = json.loads(line)
            out.append(Create(item["result"], tuple(item["names"]), tuple(item["ids"])))
        return out


def read_worker_reports(log: Path) -> list[WorkerReport]:
    """A worker's JSON log lines saying an attempt is no longer its own."""
    out: list[WorkerReport] = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except ValueError:
            continue
        msg = str(item.get("msg", ""))
        what = ("lease_lost" if msg.startswith("lease lost")
                else "write_fenced" if msg.startswith("write fenced") else None)
        if what and isinstance(item.get("job_id"), int) and isinstance(item.get("attempt"), int):
            out.append(WorkerReport(item["job_id"], item["attempt"], what))
    return out


def load(url: str, *, creates: list[Create] | None, processes: list[Process],
         reports: list[WorkerReport], default_concurrency: int | None = None,
         retired: Mapping[str, datetime] | None = None,
         healed_at: datetime | None = None) -> History:
    """All tables from one REPEATABLE READ snapshot, so they agree with each other.
    `retired`: the watermark each schedule the harness retired had (its row now says
    never)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5,
                         application_name="boundq-harness") as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        jobs = [Job(*r) for r in conn.execute(
            "SELECT id, kind, status::text, attempts, max_attempts, name, lease_owner, "
            "finished_at, queue, "
            "CASE WHEN kind = 'echo' THEN payload #>> '{then,name}' END FROM jobs ORDER BY id")]
        # job_attempts holds ended attempts only; a processing job's running attempt is its
        # jobs row, so the checker sees it as an open attempt read from that row.
        attempts = [Attempt(*r) for r in conn.execute(
            "SELECT job_id, attempt, owner, claimed_at, finished_at, outcome::text, error "
            "FROM job_attempts "
            "UNION ALL "
            "SELECT id, attempts, lease_owner, started_at, NULL, NULL, NULL "
            "FROM jobs WHERE status = 'processing'")]
        effects = [Effect(*r) for r in conn.execute("SELECT job_id, attempt FROM job_effects")]
        schedules = [Schedule(*r) for r in conn.execute(
            "SELECT name, cron, timezone, catch_up, first_tick_at, next_tick_at "
            "FROM job_schedules ORDER BY name")]
        ticks = [Tick(*r) for r in conn.execute(
            "SELECT schedule, tick_at, job_id, window_start FROM job_schedule_ticks")]
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (audit.AUDIT_TABLE,)).fetchone()
        transitions = ([Transition(*r) for r in conn.execute(audit.SELECT)]
                       if row and row[0] else None)
        changes = [LimitChange(*r) for r in conn.execute(
            "SELECT id, scope, name, concurrency, rate_per_s, burst, paused, changed_at, "
            "effective_at FROM job_limit_changes ORDER BY id")]
        dependencies = [Dependency(*r) for r in conn.execute(
            "SELECT child_id, parent_id FROM job_dependencies")]
        events = [JobEvent(*r) for r in conn.execute(
            "SELECT job_id, status::text, attempt FROM job_events ORDER BY txid, seq")]
        horizon = conn.execute("SELECT seq FROM job_events_horizon").fetchone()
        conn.execute("COMMIT")
    retired = retired or {}
    schedules = [replace(s, next_tick_at=retired.get(s.name, s.next_tick_at)) for s in schedules]
    return History(jobs=jobs, attempts=attempts, effects=effects, transitions=transitions,
                   creates=creates, processes=processes, reports=reports,
                   default_concurrency=default_concurrency, limit_changes=changes,
                   schedules=schedules, ticks=ticks, healed_at=healed_at,
                   dependencies=dependencies, events=events,
                   events_trimmed=bool(horizon and horizon[0]))


def dump(history: History) -> dict[str, Any]:
    def rows(items: Iterable[Any] | None) -> list[dict[str, Any]] | None:
        return None if items is None else [asdict(i) for i in items]

    return {"jobs": rows(history.jobs), "attempts": rows(history.attempts),
            "effects": rows(history.effects), "transitions": rows(history.transitions),
            "creates": rows(history.creates), "processes": rows(history.processes),
            "reports": rows(history.reports), "limit_changes": rows(history.limit_changes),
            "schedules": rows(history.schedules), "ticks": rows(history.ticks),
            "dependencies": rows(history.dependencies), "healed_at": history.healed_at,
            "events": rows(history.events), "events_trimmed": history.events_trimmed}
