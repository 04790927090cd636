"""The core's commands: `boundq db`, `migrate`, `rollback`, `refresh`, `worker`, `enqueue`;
and the helpers every command shares (settings with flag overrides, the database URL,
running a coroutine on uvloop).

Every command that needs a database uses DATABASE_URL, or starts the embedded cluster
when it is unset.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from boundq.core import tracing
from boundq.core.config import Settings, load_settings
from boundq.core.errors import BoundqError
from boundq.core.logs import configure_logging


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment (and .env), with the command's flags on top."""
    settings = load_settings()
    changes: dict[str, Any] = {}
    for attr in ("num_workers", "max_concurrent_jobs", "worker_processes", "http_port",
                 "http_host"):
        value = getattr(args, attr, None)
        if value is not None:
            changes[attr] = value
    return settings.with_overrides(**changes) if changes else settings


def database_url(settings: Settings) -> str:
    from boundq.core.pgembed import resolve_database_url

    return resolve_database_url(settings.database_url)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def load_handlers(settings: Settings, args: argparse.Namespace) -> None:
    from boundq.core.handlers import import_handler_modules

    spec = ",".join(filter(None, [settings.handler_modules, getattr(args, "handlers", None)]))
    if spec:
        import_handler_modules(spec)


# --- commands ---------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from boundq.core.pgembed import embedded

    settings = load_settings()
    if args.replica:
        return db_replica(args.action, settings)
    if settings.database_url and args.action == "url":
        print(settings.database_url)
        return 0
    cluster = embedded()
    if args.action == "start":
        print(cluster.start())
    elif args.action == "stop":
        from boundq.core.pgreplica import EmbeddedReplica

        replica = EmbeddedReplica(cluster)  # stopped first: it follows the primary
        if replica.stop():
            print("replica stopped")
        print("stopped" if cluster.stop() else "not running")
    elif args.action == "status":
        from boundq.core.pgreplica import EmbeddedReplica

        print(f"primary: {cluster.status()}")
        print(f"replica: {EmbeddedReplica(cluster).status()}")
        return 0 if cluster.running() else 3
    elif args.action == "url":
        if not cluster.running():
            print("embedded PostgreSQL is not running: `boundq db start`", file=sys.stderr)
            return 3
        print(cluster.url())
    return 0


def db_replica(action: str, settings: Settings) -> int:
    """`boundq db start|stop|status|url --replica`: the embedded cluster's streaming
    replica. It exists only beside the embedded primary; a server named by DATABASE_URL
    gets its replicas from its own tools (then REPLICA_DATABASE_URL names one)."""
    from boundq.core.pgembed import embedded
    from boundq.core.pgreplica import EmbeddedReplica

    if action == "url" and settings.replica_database_url:
        print(settings.replica_database_url)
        return 0
    if settings.database_url and action in ("start", "url"):
        raise BoundqError(
            "DATABASE_URL names a server boundq does not manage, and `--replica` makes a "
            "replica of the embedded cluster only: make a streaming replica of that server "
            "with its own tools and set REPLICA_DATABASE_URL to it (or unset DATABASE_URL)")
    primary = embedded()
    replica = EmbeddedReplica(primary)
    if action == "start":
        print(primary.start())
        print(replica.start())
    elif action == "stop":
        print("replica stopped" if replica.stop() else "replica not running")
        print("stopped" if primary.stop() else "not running")
    elif action == "status":
        print(f"primary: {primary.status()}")
        print(f"replica: {replica.status()}")
        return 0 if primary.running() and replica.running() else 3
    elif action == "url":
        if not replica.running():
            print("the embedded replica is not running: `boundq db start --replica`",
                  file=sys.stderr)
            return 3
        print(replica.url())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from boundq.core.migrate import migrate

    applied = run(migrate(database_url(load_settings()), args.to))
    print(f"applied: {applied or 'nothing (schema is current)'}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from boundq.core.migrate import rollback

    undone = run(rollback(database_url(load_settings()), args.steps))
    print(f"rolled back: {undone or 'nothing'}")
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from boundq.core.migrate import refresh

    undone, applied = run(refresh(database_url(load_settings())))
    print(f"rolled back: {undone or 'nothing'}; applied: {applied}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from boundq.core.migrate import migrate_when_reachable

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    load_handlers(settings, args)
    url = database_url(settings)
    if settings.worker_processes > 1:
        from boundq.core.supervisor import supervise

        tracing.require()  # each worker process sets tracing up; fail here, once
        run(migrate_when_reachable(url))
        return supervise(worker_specs(args, settings.worker_processes),
                         metrics_port=settings.metrics_port)
    from boundq.core.gc_tuning import WORKER_THRESHOLDS, tune_gc
    from boundq.core.worker import Worker

    tracing.configure("boundq-worker")  # before the Worker: it decides at construction
    worker = Worker(settings, url)
    if settings.metrics_port:
        from boundq.core.metrics import serve_metrics

        serve_metrics(settings.metrics_port)

    async def prepare() -> None:
        await migrate_when_reachable(url)
        tune_gc(WORKER_THRESHOLDS)

    run(worker.run_until_signalled(before_start=prepare))
    return 0


def worker_specs(args: argparse.Namespace, processes: int) -> list[Any]:
    """The worker processes a supervisor runs (each one `boundq worker --processes 1`)."""
    from boundq.core.supervisor import ChildSpec

    return [ChildSpec("worker", worker_argv(args), {"WORKER_PROCESSES": "1"})
            for _ in range(processes)]


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The command line of one worker process started by a supervisor."""
    out = [sys.executable, "-m", "boundq", "worker", "--processes", "1"]
    for flag, attr in (("--workers", "num_workers"), ("--concurrency", "max_concurrent_jobs")):
        value = getattr(args, attr, None)
        if value is not None:
            out += [flag, str(value)]
    if getattr(args, "handlers", None):
        out += ["--handlers", args.handlers]
    return out


def cmd_enqueue(args: argparse.Namespace) -> int:
    import psycopg

    from boundq.core import queue
    from boundq.core.handlers import default_registry
    from boundq.core.migrate import migrate
    from boundq.core.validation import validate_job

    settings = settings_from(args)
    load_handlers(settings, args)
    tracing.configure("boundq-enqueue")
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
        items = json.loads(text)
        if not isinstance(items, list):
            raise BoundqError("the file must hold a JSON array of jobs")
    else:
        payload = json.loads(args.payload) if args.payload else {}
        items = [{"name": args.name or args.kind, "kind": args.kind, "payload": payload,
                  "priority": args.priority, "delay": args.delay} for _ in range(args.count)]
    specs = [validate_job(item, default_registry, settings) for item in items]

    async def insert() -> list[int]:
        url = database_url(settings)
        await migrate(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            with tracing.creating(count=len(specs), via="cli") as trace:
                trace.stamp(specs)
                return await queue.enqueue_many(conn, specs)

    ids = run(insert())
    print(json.dumps({"created": len(ids), "first_id": ids[0] if ids else None,
                      "last_id": ids[-1] if ids else None}))
    return 0


def cmd_schedules(args: argparse.Namespace) -> int:
    """`boundq schedules put|get|list|delete`: the /schedules API, straight to the database
    (validated as PUT /schedules does; a bad field exits 2 naming it)."""
    import psycopg

    from boundq.core import schedules
    from boundq.core.cron import validate_schedule
    from boundq.core.db import encode_json
    from boundq.core.handlers import default_registry
    from boundq.core.migrate import migrate
    from boundq.core.validation import check_queue_name

    settings = settings_from(args)
    load_handlers(settings, args)
    spec = None
    if args.action != "list":
        if not args.name:
            raise BoundqError(f"schedules {args.action}: give the schedule's name")
        check_queue_name(args.name, "name")
    if args.action == "put":
        body: dict[str, Any] = {"cron": args.cron, "timezone": args.timezone,
                                "job": json.loads(args.job) if args.job else None,
                                "catch_up": args.catch_up}
        spec = validate_schedule(args.name, body, default_registry, settings)

    async def go() -> tuple[int, Any]:
        url = database_url(settings)
        await migrate(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            if spec is not None:
                row, created = await schedules.put(conn, spec)
                return 0, {**row, "created": created}
            if args.action == "get":
                found = await schedules.get(conn, args.name)
                return (0, found) if found else (3, {"error": f"no schedule named {args.name!r}"})
            if args.action == "delete":
                gone = await schedules.delete(conn, args.name)
                return (0, {"deleted": args.name}) if gone else (
                    3, {"error": f"no schedule named {args.name!r}"})
            return 0, {"schedules": await schedules.list_all(conn)}

    code, out = run(go())
    print(encode_json(out), file=sys.stdout if code == 0 else sys.stderr)
    return int(code)


def cmd_events(args: argparse.Namespace) -> int:
    """`boundq events on|off|status`: the change log behind GET /events (core/events_log.py)."""
    import psycopg

    from boundq.core.events_log import events_enabled, switch_events
    from boundq.core.migrate import migrate

    async def go() -> bool:
        url = database_url(settings_from(args))
        await migrate(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            if args.action == "status":
                return await events_enabled(conn)
            return await switch_events(conn, args.action == "on")

    on = run(go())
    print("the change log (GET /events) is " + ("on" if on else "off"))
    return 0


# --- parsers ----------------------------------------------------------------------------
def worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", dest="num_workers", type=int, help="claim loops (NUM_WORKERS)")
    p.add_argument("--concurrency", dest="max_concurrent_jobs", type=int,
                   help="permits per process (MAX_CONCURRENT_JOBS)")
    p.add_argument("--processes", dest="worker_processes", type=int,
                   help="worker processes (WORKER_PROCESSES)")
    p.add_argument("--handlers", help="comma-separated modules that register handlers")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="manage the embedded PostgreSQL")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    db.add_argument("--replica", action="store_true",
                    help="start: also a streaming replica of the embedded cluster; "
                         "url: the replica's URL; stop/status: both")
    db.set_defaults(func=cmd_db)

    mig = sub.add_parser("migrate", help="apply pending migrations")
    mig.add_argument("--to", type=int, default=None, help="target version (default: latest)")
    mig.set_defaults(func=cmd_migrate)

    rb = sub.add_parser("rollback", help="undo migrations")
    rb.add_argument("--steps", type=int, default=1)
    rb.set_defaults(func=cmd_rollback)

    sub.add_parser("refresh", help="roll back everything and migrate again (drops data)"
                   ).set_defaults(func=cmd_refresh)

    worker = sub.add_parser("worker", help="run workers only")
    worker_flags(worker)
    worker.set_defaults(func=cmd_worker)

    enq = sub.add_parser("enqueue", help="enqueue jobs")
    enq.add_argument("--kind", default="noop")
    enq.add_argument("--name")
    enq.add_argument("--payload", help="JSON object")
    enq.add_argument("--priority", type=int, default=0)
    enq.add_argument("--delay", type=float, default=None)
    enq.add_argument("--count", type=int, default=1)
    enq.add_argument("--file", help="JSON array of jobs ('-' = stdin)")
    enq.add_argument("--handlers")
    enq.set_defaults(func=cmd_enqueue)

    ev = sub.add_parser("events", help="turn the change log behind GET /events on or off "
                        "(off by default: it costs a drain CPU), or show it")
    ev.add_argument("action", choices=["on", "off", "status"])
    ev.set_defaults(func=cmd_events)

    sch = sub.add_parser("schedules", help="cron schedules: put, get, list, delete")
    sch.add_argument("action", choices=["put", "get", "list", "delete"])
    sch.add_argument("name", nargs="?", help="the schedule's name (not for list)")
    sch.add_argument("--cron", help="5 fields: minute hour day-of-month month day-of-week")
    sch.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    sch.add_argument("--job", help="the job template: JSON, the fields of POST /jobs "
                                   "without name, run_at and dedupe_key")
    sch.add_argument("--catch-up", dest="catch_up", type=int, default=None,
                     help="after an outage, jobs for at most this many missed ticks (1)")
    sch.add_argument("--handlers")
    sch.set_defaults(func=cmd_schedules)
