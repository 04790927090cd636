"""A parent that runs child processes and keeps them running: the worker processes of
`boundq worker --processes N`, and the API process beside the workers of `boundq serve`.

Children stay in the parent's process group. SIGTERM or SIGINT to the parent is passed
to every child once, and the parent waits for them all; a terminal's Ctrl-C reaches the
children directly as well, so each child gets it twice, which the children ignore (they
drain once). A child that dies on its own (a crash, SIGKILL) is started again after a
short pause; a worker's jobs come back through the reaper. A child that exits with
EXIT_FATAL (a setting it cannot run with) is not restarted: the parent stops the others
and exits with that code.

Metrics: the parent gives its children one prometheus-client multiprocess directory (a
temporary one, removed at exit, unless PROMETHEUS_MULTIPROC_DIR is set already), so one
scrape sees every process: the API's `/metrics`, or METRICS_PORT served by this parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType

from boundq.core.cpus import confine

log = logging.getLogger("boundq.supervisor")

RESTART_PAUSE_S = 1.0
EXIT_FATAL = 2
_CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)


@dataclass(frozen=True)
class ChildSpec:
    name: str  # for the logs: "worker", "api"
    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the parent's environment
    nice: int = 0  # added to the child's niceness (lower priority) at start
    pass_fds: tuple[int, ...] = ()
    cpus: frozenset[int] | None = None  # the CPUs it may run on (None: as inherited)


def _placement(spec: ChildSpec) -> Callable[[], None] | None:
    if spec.nice <= 0 and spec.cpus is None:
        return None

    def preexec() -> None:
        if spec.nice > 0:
            os.nice(spec.nice)
        confine(spec.cpus)

    return preexec


def _start(spec: ChildSpec) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(list(spec.argv), env={**os.environ, **spec.env},
                             pass_fds=spec.pass_fds, preexec_fn=_placement(spec))
    log.info("started %s process %d", spec.name, child.pid)
    return child


@contextlib.contextmanager
def _metrics_dir() -> Iterator[str]:
    from boundq.core.metrics import MULTIPROC_ENV

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="boundq-metrics-")
    os.environ[MULTIPROC_ENV] = path  # before anything here imports prometheus-client
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _mark_dead(pid: int) -> None:
    """A dead child's live gauges leave the sums (its counters stay counted)."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def supervise(specs: Sequence[ChildSpec], poll_s: float = 0.2,
              on_started: Callable[[], None] | None = None, metrics_port: int = 0) -> int:
    """Run every child until SIGTERM/SIGINT; returns 0 when all of them ended cleanly."""
    with _metrics_dir():
        if metrics_port:
            from boundq.core.metrics import serve_metrics

            serve_metrics(metrics_port)
        return _supervise(specs, poll_s, on_started)


def _supervise(specs: Sequence[ChildSpec], poll_s: float,
               on_started: Callable[[], None] | None) -> int:
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return  # said once; the children are draining
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        children.extend(_start(spec) for spec in specs)
        if on_started is not None:
            on_started()
        return _watch(specs, children, lambda: stopping, forward, poll_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(specs: Sequence[ChildSpec], children: list[subprocess.Popen[bytes]],
           stopping: Callable[[], bool], stop_all: Callable[[int, FrameType | None], None],
           poll_s: float) -> int:
    restart_at: dict[int, float] = {}
    fatal: int | None = None
    while True:
        if stopping():
            codes = [child.wait() for child in children]
            for child in children:
                _mark_dead(child.pid)
            if fatal is not None:
                return fatal
            return 0 if all(code in _CLEAN_EXITS for code in codes) else 1
        for index, child in enumerate(children):
            code = child.poll()
            if code is None:
                continue
            if code == EXIT_FATAL:
                log.error("%s process %d cannot run (exit %d); stopping", specs[index].name,
                          child.pid, code)
                fatal = code
                stop_all(signal.SIGTERM, None)
                break
            due = restart_at.setdefault(index, time.monotonic() + RESTART_PAUSE_S)
            if time.monotonic() >= due:
                log.warning("%s process %d exited with %s; starting another",
                            specs[index].name, child.pid, code)
                _mark_dead(child.pid)
                children[index] = _start(specs[index])
                restart_at.pop(index, None)
        time.sleep(poll_s)
