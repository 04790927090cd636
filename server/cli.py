"""`boundq`: the command line, and the Makefile's engine.

Every command that needs a database uses DATABASE_URL, or starts the embedded cluster
when it is unset. Errors a user can fix (a bad setting, no server binaries) print one
line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
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
    from core.migrate import migrate

    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    _load_handlers(settings, args)
    url = _url(settings)
    _run(migrate(url))
    if settings.worker_processes > 1:
        from core.supervisor import supervise

        return supervise(settings.worker_processes, [sys.executable, "-m", "server.cli", "worker",
                                                     *_child_args(args)])
    from core.worker import Worker

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


def cmd_not_built(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"boundq {name}: not built yet", file=sys.stderr)
        return 2

    return run


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

    for name in ("flood", "report"):
        sub.add_parser(name, help=f"{name} (see README)").set_defaults(func=cmd_not_built(name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
