"""The server's command: `boundq serve` (the HTTP API, with the workers)."""

from __future__ import annotations

import argparse

from boundq.core import tracing
from boundq.core.cli import database_url, load_handlers, settings_from, worker_argv, worker_flags
from boundq.core.logs import configure_logging


def cmd_serve(args: argparse.Namespace) -> int:
    from boundq.server.serve import serve

    settings = settings_from(args)
    configure_logging(settings.log_format, settings.log_level)
    load_handlers(settings, args)  # fail here, once, on a bad handler module
    tracing.require()  # the API and worker processes set tracing up; fail here, once
    if getattr(args, "handlers", None):  # the API process validates payloads with them
        import os

        os.environ["BOUNDQ_HANDLERS"] = ",".join(
            filter(None, [settings.handler_modules, args.handlers]))
    return serve(settings, database_url(settings), worker_argv(args))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API and the workers (each in its own "
                           "processes)")
    worker_flags(serve)
    serve.add_argument("--port", dest="http_port", type=int, help="HTTP_PORT")
    serve.add_argument("--host", dest="http_host", help="HTTP_HOST")
    serve.set_defaults(func=cmd_serve)
