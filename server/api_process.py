"""The API process of `boundq serve`: uvicorn (httptools on uvloop) serving the app on
the socket its parent bound and passed down (BOUNDQ_API_FD).

Its own signal handling: the first SIGTERM or SIGINT stops accepting and lets the
requests in flight finish (SHUTDOWN_GRACE_SECONDS); later ones change nothing, so a
terminal's Ctrl-C (which reaches the whole group) and the parent's forwarded signal
together still make one graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

from boundq.core import tracing
from boundq.core.config import Settings, load_settings
from boundq.core.gc_tuning import SERVE_THRESHOLDS, tune_gc
from boundq.core.handlers import import_handler_modules
from boundq.core.logs import configure_logging
from boundq.server.app import create_app
from boundq.server.events import EventSettings
from boundq.server.options import ApiOptions
from boundq.server.serve import API_FD_ENV

log = logging.getLogger("boundq.serve")

# Connections uvicorn serves at once; past this it answers 503 instead of queueing.
LIMIT_CONCURRENCY = 2048


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process decides what a signal means."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app, loop="uvloop", http="httptools", lifespan="on", log_config=None,
        access_log=False, server_header=False, proxy_headers=False,
        limit_concurrency=LIMIT_CONCURRENCY, timeout_keep_alive=15,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )


async def run_api(settings: Settings, url: str, sock: socket.socket) -> int:
    app = create_app(settings, url, options=ApiOptions(
        group_commit=settings.api_group_commit, shed_lag_s=settings.api_shed_lag_seconds,
        events=EventSettings(poll_s=settings.events_poll_seconds,
                             max_clients=settings.events_max_clients,
                             client_buffer=settings.events_client_buffer)))
    server = ApiServer(uvicorn_config(app, settings))

    def on_signal() -> None:
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    tune_gc(SERVE_THRESHOLDS)
    try:
        await server.serve(sockets=[sock])
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
    return 0 if server.started else 1


def main() -> int:
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    tracing.configure("boundq-api", instrument_psycopg=True)  # before the pool connects
    if settings.handler_modules:
        import_handler_modules(settings.handler_modules)
    url = os.environ["DATABASE_URL"]
    sock = socket.socket(fileno=int(os.environ[API_FD_ENV]))
    import uvloop

    return int(uvloop.run(run_api(settings, url, sock)))


if __name__ == "__main__":
    sys.exit(main())
