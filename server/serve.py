"""`boundq serve`: the HTTP API and the workers in one process, on one uvloop event loop.

It migrates, splits the process's connection budget between the API pool (API_POOL_BUFFER
connections) and the worker pool (the rest), starts core.worker.Worker, and runs uvicorn
(httptools) programmatically. SIGTERM or SIGINT: uvicorn stops accepting, lets in-flight
requests finish (SHUTDOWN_GRACE_SECONDS), then the worker drains; a second SIGINT forces.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator

import psycopg
import uvicorn
from starlette.applications import Starlette

from boundq.core.config import Settings
from boundq.core.db import open_pool, pool_max_size, server_max_connections
from boundq.core.gc_tuning import SERVE_THRESHOLDS, tune_gc
from boundq.core.metrics import Metrics
from boundq.core.migrate import migrate_when_reachable
from boundq.core.worker import Worker
from boundq.server.app import create_app
from boundq.server.state import ApiOptions

log = logging.getLogger("boundq.serve")

# Connections uvicorn serves at once; past this it answers 503 instead of queueing.
LIMIT_CONCURRENCY = 2048


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the caller owns SIGTERM/SIGINT, so the
    worker can drain after the server stops (uvicorn would re-raise the signal)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def split_budget(settings: Settings, budget: int) -> tuple[int, int]:
    """(api pool size, worker pool size) out of the process's pool budget."""
    api = max(2, min(settings.api_pool_buffer, budget - 2))
    return api, max(2, budget - api)


def uvicorn_config(app: Starlette, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.http_host, port=settings.http_port, loop="uvloop", http="httptools",
        lifespan="on", log_config=None, access_log=False, server_header=False,
        proxy_headers=False,
        limit_concurrency=LIMIT_CONCURRENCY, backlog=2048, timeout_keep_alive=15,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
    )


async def run_server(settings: Settings, url: str, group_commit: bool = True) -> int:
    await migrate_when_reachable(url)
    budget = pool_max_size(settings, await server_max_connections(url))
    api_size, worker_size = split_budget(settings, budget)
    metrics = Metrics()
    worker_pool = await open_pool(url, settings, "worker", max_size=worker_size, wait=False)
    worker = Worker(settings, url, metrics=metrics, pool=worker_pool)
    options = ApiOptions(pool_size=api_size, group_commit=group_commit)
    app = create_app(settings, url, options=options, core_metrics=metrics)
    server = ApiServer(uvicorn_config(app, settings))

    def on_signal(sig: signal.Signals) -> None:
        if server.should_exit and sig == signal.SIGINT:
            server.force_exit = True  # a second Ctrl-C: stop waiting for requests
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    log.info("boundq serve on http://%s:%d (api pool %d, worker pool %d)",
             settings.http_host, settings.http_port, api_size, worker_size)
    await worker.start()
    tune_gc(SERVE_THRESHOLDS)
    try:
        await server.serve()
    finally:
        await app.state.api.stop()  # a no-op unless a forced exit skipped the lifespan
        await worker.stop()
        await worker_pool.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return 0 if server.started else 1


def serve(settings: Settings, url: str, group_commit: bool = True) -> int:
    try:
        import uvloop

        return int(uvloop.run(run_server(settings, url, group_commit)))
    except psycopg.OperationalError as exc:
        print(f"boundq serve: the database is unreachable: {exc}".strip(), file=sys.stderr)
        return 2
