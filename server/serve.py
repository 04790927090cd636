"""`boundq serve`: the HTTP API and the workers, each in processes of their own, under one
parent.

The parent binds the API's socket first (a busy port is reported at once, naming
HTTP_PORT and --port, and "serving" is logged only once the socket is bound), migrates,
then supervises (core/supervisor.py):
- one API process: uvicorn on the inherited socket, at a lower CPU priority (API_NICE,
  default 10), and with API_CPUS=auto (`make run`) on all CPUs but the first
  (core/cpus.py says why). Under a flood the workers and PostgreSQL keep a CPU to wake
  up on, and the API sheds what it cannot take at the door (server/admission.py)
  instead of starving them;
- WORKER_PROCESSES worker processes (`boundq worker`), each with its own connections.
With METRICS_PORT the parent serves `/metrics` there for every process (the API's and the
workers', as the API's own `/metrics` does); the children inherit the setting and leave
the port to the parent (core/metrics.py), as under `boundq worker --processes N`.
SIGTERM or SIGINT to the parent or to the whole process group: the API stops accepting
and finishes the requests in flight, the workers drain (SHUTDOWN_GRACE_SECONDS), and the
parent exits when all of them have.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys

from boundq.core.cli import run
from boundq.core.config import Settings
from boundq.core.cpus import api_cpus, named
from boundq.core.migrate import migrate_when_reachable
from boundq.core.supervisor import EXIT_FATAL, ChildSpec, supervise

log = logging.getLogger("boundq.serve")

API_FD_ENV = "BOUNDQ_API_FD"
LISTEN_BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


def bind_error(host: str, port: int, exc: OSError) -> str:
    reason = ("the address is already in use (another boundq serve?)"
              if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
    return (f"boundq serve: cannot listen on {host}:{port}: {reason}; choose another port "
            "with HTTP_PORT=... or --port ..., another address with HTTP_HOST or --host")


def child_specs(settings: Settings, fd: int, worker_argv: list[str],
                api_cpus: frozenset[int] | None = None) -> list[ChildSpec]:
    api = ChildSpec("api", [sys.executable, "-m", "boundq.server.api_process"],
                    {API_FD_ENV: str(fd)}, nice=settings.api_nice, pass_fds=(fd,),
                    cpus=api_cpus)
    workers = [ChildSpec("worker", worker_argv, {"WORKER_PROCESSES": "1"})
               for _ in range(settings.worker_processes)]
    return [api, *workers]


def serve(settings: Settings, url: str, worker_argv: list[str]) -> int:
    try:
        cpus = api_cpus(settings.api_cpus)
    except ValueError as exc:
        print(f"boundq serve: {exc}; set API_CPUS=auto, all, or CPUs from that list",
              file=sys.stderr)
        return EXIT_FATAL
    try:
        sock = bind(settings.http_host, settings.http_port)
    except OSError as exc:
        print(bind_error(settings.http_host, settings.http_port, exc), file=sys.stderr)
        return EXIT_FATAL
    host, port = sock.getsockname()[:2]
    run(migrate_when_reachable(url))
    os.environ["DATABASE_URL"] = url  # the children use the same database

    def started() -> None:
        log.info("boundq serve: API on http://%s:%d (%s), %d worker process(es); Ctrl-C "
                 "stops (the API finishes its requests, the workers drain)", host, port,
                 named(cpus), settings.worker_processes)

    try:
        return supervise(child_specs(settings, sock.fileno(), worker_argv, cpus),
                         on_started=started,
                         metrics_port=settings.metrics_port)
    finally:
        sock.close()
