"""Which PostgreSQL the test fixtures use: the embedded cluster, or a testcontainers one.

BOUNDQ_TEST_PG selects it:

  embedded (or unset)  a throwaway cluster from the local server binaries (the default)
  container            a PostgreSQL container (testcontainers) when a Docker engine is
                       reachable; otherwise the embedded cluster, with a one-line notice
                       in the pytest header saying why
  require-container    a container or nothing: the session stops with the reason when no
                       engine is reachable (for CI that must test against the image)

The choice is made once per session (`choose_backend`) and printed in pytest's header
(conftest.pytest_report_header), so every run says which PostgreSQL it tested against.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

IMAGE = os.environ.get("BOUNDQ_TEST_PG_IMAGE", "postgres:15")
MODES = ("embedded", "container", "require-container")


class BackendError(RuntimeError):
    pass


@dataclass(frozen=True)
class Backend:
    kind: str  # "embedded" or "container"
    notice: str | None = None  # why the embedded cluster ran although a container was asked

    def header(self) -> str:
        what = (f"PostgreSQL backend: container ({IMAGE}, testcontainers)"
                if self.kind == "container" else "PostgreSQL backend: embedded cluster")
        return what + (f" -- {self.notice}" if self.notice else "")


def docker_engine(timeout: float = 3.0) -> tuple[bool, str]:
    """(reachable, why not): the Docker engine DOCKER_HOST (or the default socket) names,
    asked with a ping; never raises."""
    try:
        import docker  # testcontainers' own client library
        import docker.errors
    except ImportError:
        return False, "testcontainers is not installed (pip install -e '.[test]')"
    try:
        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            client.ping()
        finally:
            client.close()
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return False, f"no Docker engine reachable ({first[:160]})"
    return True, ""


def choose_backend(env: Mapping[str, str] | None = None) -> Backend:
    env = os.environ if env is None else env
    mode = (env.get("BOUNDQ_TEST_PG") or "embedded").strip().lower()
    if mode not in MODES:
        raise BackendError(f"BOUNDQ_TEST_PG={mode!r}: use one of {', '.join(MODES)}")
    if mode == "embedded":
        return Backend("embedded")
    reachable, why = docker_engine()
    if reachable:
        return Backend("container")
    if mode == "require-container":
        raise BackendError(f"BOUNDQ_TEST_PG=require-container, but {why}")
    return Backend("embedded", f"BOUNDQ_TEST_PG=container, but {why}: using the embedded "
                               "cluster")


# --- the container, with the interface the fixtures and tests use ---------------------
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class ContainerPostgres:
    """A testcontainers PostgreSQL with the EmbeddedPostgres methods the tests call: url,
    start, stop(mode), running, destroy. Its host port is fixed when it starts, so a
    stop and start (the outage tests) keep every URL valid."""

    def __init__(self, image: str = IMAGE, max_connections: int = 400) -> None:
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before the community namespace
            from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef]
        from boundq.core.pgembed import free_port

        self.host_port = free_port()
        self.container: Any = PostgresContainer(image, username="postgres",
                                                password="boundq", dbname="postgres")
        self.container.with_bind_ports(5432, self.host_port)
        # the embedded test cluster's settings: no fsync (throwaway), room for the floods
        self.container.with_command(f"postgres -c fsync=off -c max_connections={max_connections}")
        self.started = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:boundq@127.0.0.1:{self.host_port}/{database}"

    def start(self, timeout: float = 120) -> str:
        if not self.started:
            self.container.start()
            self.started = True
        elif not self.running():
            self.container.get_wrapped_container().start()
        self._wait_ready(timeout)
        return self.url()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def running(self) -> bool:
        wrapped = self.container.get_wrapped_container()
        if wrapped is None:
            return False
        wrapped.reload()
        return bool(wrapped.status == "running")

    def stop(self, mode: str = "fast", timeout: float = 60) -> bool:
        if not self.running():
            return False
        wrapped = self.container.get_wrapped_container()
        wrapped.kill(signal=int(_STOP_SIGNALS[mode]))  # what pg_ctl -m <mode> sends
        with contextlib.suppress(Exception):
            wrapped.wait(timeout=timeout)
        return True

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.container.stop()
