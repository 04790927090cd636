"""`boundq`: the command line, and the Makefile's engine.

Every command that needs a database uses DATABASE_URL, or starts the embedded cluster
when it is unset. Errors a user can fix (a bad setting, no server binaries) print one
line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from core.config import Settings, load_settings
from core.errors import BoundqError
from core.logs import configure_logging


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    changes: dict[str, Any] = {}
    for attr in ("num_workers", "max_concurrent_jobs", "worker_processes", "http_port",
                 "http_host"):
        value = getattr(args, attr, None)
        if value is not None:
            changes[attr] = value
    return settings.with_overrides(**changes) if changes else settings


def _url(settings: Settings) -> str:
    from core.pgembed import resolve_database_url

    return resolve_database_url(settings.database_url)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --- commands ---------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from core.pgembed import embedded

    settings = load_settings()
    if settings.database_url and args.action == "url":
        print(settings.database_url)
        return 0
    cluster = embedded()
    if args.action == "start":
        print(cluster.start())
    elif args.action == "stop":
        print("stopped" if cluster.stop() else "not running")
    elif args.action == "status":
        print(cluster.status())
        return 0 if cluster.running() else 3
    elif args.action == "url":
        if not cluster.running():
            print("embedded PostgreSQL is not running: `boundq db start`", file=sys.stderr)
            return 3
        print(cluster.url())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from core.migrate import migrate

    url = _url(load_settings())
    applied = _run(migrate(url, args.to))
    print(f"applied: {applied or 'nothing (schema is current)'}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from core.migrate import rollback

    undone = _run(rollback(_url(load_settings()), args.steps))
    print(f"rolled back: {undone or 'nothing'}")
    return 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from core.migrate import refresh

    undone, applied = _run(refresh(_url(load_settings())))
    print(f"rolled back: {undone or 'nothing'}; applied: {applied}")
    return 0


def _load_handlers(settings: Settings, args: argparse.Namespace) -> None:
    from core.handlers import import_handler_modules

    spec = ",".join(filter(None, [settings.handler_modules, getattr(args, "handlers", None)]))
    if spec:
        import_handler_modules(spec)


def cmd_worker(args: argparse.Namespace) -> int:
    from core.migrate import migrate_when_reachable

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    _load_handlers(settings, args)
    url = _url(settings)
    _run(migrate_when_reachable(url))
    if settings.worker_processes > 1:
        from core.supervisor import supervise

        return supervise(settings.worker_processes, [sys.executable, "-m", "server.cli", "worker",
                                                     *_child_args(args)])
    from core.gc_tuning import WORKER_THRESHOLDS, tune_gc
    from core.worker import Worker

    tune_gc(WORKER_THRESHOLDS)
    _run(Worker(settings, url).run_until_signalled())
    return 0


def _child_args(args: argparse.Namespace) -> list[str]:
    out = ["--processes", "1"]
    for flag, attr in (("--workers", "num_workers"), ("--concurrency", "max_concurrent_jobs")):
        value = getattr(args, attr, None)
        if value is not None:
            out += [flag, str(value)]
    if getattr(args, "handlers", None):
        out += ["--handlers", args.handlers]
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from server.serve import serve
    except ImportError:
        print("boundq serve: the HTTP API is not built yet; use `boundq worker`", file=sys.stderr)
        return 2
    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    _load_handlers(settings, args)
    return serve(settings, _url(settings))


def cmd_enqueue(args: argparse.Namespace) -> int:
    import psycopg

    from core import queue
    from core.handlers import default_registry
    from core.migrate import migrate
    from core.validation import validate_job

    settings = _settings(args)
    _load_handlers(settings, args)
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
        url = _url(settings)
        await migrate(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await queue.enqueue_many(conn, specs)

    ids = _run(insert())
    print(json.dumps({"created": len(ids), "first_id": ids[0] if ids else None,
                      "last_id": ids[-1] if ids else None}))
    return 0


def _project_on_path() -> None:
    """loadtests/ and reports/ live beside server/ in the checkout, not in the package."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)


def _env_default(name: str, default: str) -> str:
    import os

    return os.environ.get(name) or default


def cmd_flood(args: argparse.Namespace) -> int:
    _project_on_path()
    try:  # by name: loadtests/ and reports/ are not part of the typed package (mypy)
        flood = importlib.import_module("loadtests.flood")
        flood_report = importlib.import_module("reports.flood_report")
    except ImportError as exc:
        print(f"boundq flood: {exc}; install the extras: pip install -e '.[load,report]' "
              "(make flood does)", file=sys.stderr)
        return 2
    options = flood.FloodOptions(
        scenario=args.scenario, users=args.users, spawn_rate=args.spawn_rate or args.users,
        duration_s=args.time, rate=args.rate, job_ms=args.job_ms, bulk_size=args.bulk_size,
        max_queue_depth=args.max_queue_depth, drain_timeout_s=args.drain_timeout,
        out_root=Path(args.out), num_workers=args.num_workers,
        max_concurrent_jobs=args.max_concurrent_jobs, max_db_connections=args.pool_size,
        ui_port=args.ui_port if args.ui else None, locust_processes=args.locust_processes)
    try:
        result = flood.run_flood(options)
    except flood.FloodError as exc:
        print(f"boundq flood: {exc}", file=sys.stderr)
        return 2
    report = flood_report.write_flood_report(result.run_dir)
    print(f"summary: {report}")
    return 0 if result.passed else 1


def cmd_report(args: argparse.Namespace) -> int:
    _project_on_path()
    try:
        sweep = importlib.import_module("reports.sweep")
    except ImportError as exc:
        print(f"boundq report: {exc}; install the extras: pip install -e '.[report]' "
              "(make report does)", file=sys.stderr)
        return 2
    code: int = sweep.main(args.rest)
    return code


# --- parser -----------------------------------------------------------------------------
def _worker_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", dest="num_workers", type=int, help="acquirer loops (NUM_WORKERS)")
    p.add_argument("--concurrency", dest="max_concurrent_jobs", type=int,
                   help="permits per process (MAX_CONCURRENT_JOBS)")
    p.add_argument("--processes", dest="worker_processes", type=int,
                   help="worker processes (WORKER_PROCESSES)")
    p.add_argument("--handlers", help="comma-separated modules that register handlers")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boundq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="manage the embedded PostgreSQL")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
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
    _worker_flags(worker)
    worker.set_defaults(func=cmd_worker)

    serve = sub.add_parser("serve", help="run the HTTP API and the workers")
    _worker_flags(serve)
    serve.add_argument("--port", dest="http_port", type=int)
    serve.add_argument("--host", dest="http_host")
    serve.set_defaults(func=cmd_serve)

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

    _flood_parser(sub.add_parser("flood", help="load test: API + workers under Locust, then "
                                 "verify no acknowledged job was lost"))
    rep = sub.add_parser("report", help="benchmark sweeps, figures and a summary (options: "
                         "boundq report --help)", add_help=False)
    rep.set_defaults(func=cmd_report, rest=[])
    return parser


def _flood_parser(p: argparse.ArgumentParser) -> None:
    e = _env_default
    p.add_argument("--scenario", default=e("FLOOD_SCENARIO", "mixed"),
                   choices=["mixed", "create", "bulk", "arrival", "step"],
                   help="Locust users: mixed reads/writes, single creates, bulk uploads, "
                   "open-loop arrivals at --rate, or a step-load shape (FLOOD_SCENARIO)")
    p.add_argument("--users", type=int, default=int(e("FLOOD_USERS", "50")),
                   help="Locust users (FLOOD_USERS, default 50)")
    p.add_argument("--spawn-rate", type=float, default=float(e("FLOOD_SPAWN_RATE", "0")),
                   help="users started per second (FLOOD_SPAWN_RATE, default: all in 1 s)")
    p.add_argument("--time", type=float, default=float(e("FLOOD_TIME", "30")),
                   help="seconds of load (FLOOD_TIME, default 30)")
    p.add_argument("--rate", default=e("FLOOD_RATE", ""),
                   help="arrival scenario: jobs/s, or Nx = N times the capacity bound "
                   "MAX_CONCURRENT_JOBS x 1000 / job ms (FLOOD_RATE)")
    p.add_argument("--job-ms", type=int, default=int(e("FLOOD_JOB_MS", "10")),
                   help="job duration: `sleep` jobs of this many ms; 0 = noop (FLOOD_JOB_MS, "
                   "default 10)")
    p.add_argument("--bulk-size", type=int, default=int(e("FLOOD_BULK_SIZE", "100")))
    p.add_argument("--max-queue-depth", type=int,
                   default=int(e("FLOOD_MAX_QUEUE_DEPTH", "2000")),
                   help="the server's MAX_QUEUE_DEPTH: creates past it get 429 (default 2000)")
    p.add_argument("--drain-timeout", type=float, default=float(e("FLOOD_DRAIN_TIMEOUT", "300")))
    p.add_argument("--workers", dest="num_workers", type=int, help="NUM_WORKERS")
    p.add_argument("--concurrency", dest="max_concurrent_jobs", type=int,
                   help="MAX_CONCURRENT_JOBS")
    p.add_argument("--pool-size", type=int, help="MAX_DB_CONNECTIONS")
    p.add_argument("--locust-processes", type=int, default=int(e("FLOOD_LOCUST_PROCESSES", "1")))
    p.add_argument("--ui", action="store_true", help="the Locust web UI instead of a headless "
                   "run; Ctrl-C ends it")
    p.add_argument("--ui-port", type=int, default=int(e("FLOOD_UI_PORT", "8089")))
    p.add_argument("--out", default=e("FLOOD_OUT", "reports/runs"), help="runs folder")
    p.set_defaults(func=cmd_flood)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "report":
        args.rest = extra  # `boundq report` has its own options (reports/sweep.py)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code: int = args.func(args)
    except BoundqError as exc:
        print(f"boundq: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"boundq: invalid JSON: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # psycopg.OperationalError is not one; handled below
        print(f"boundq: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"boundq: cannot reach PostgreSQL: {first}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
