"""WORKER_PROCESSES > 1: a parent that runs that many worker processes.

Children stay in the parent's process group, each with its own pool sized by the formula
and its own owner id. SIGTERM/SIGINT to the parent is passed to every child, which drains
gracefully; the parent waits for them. A child that dies on its own (a crash, SIGKILL) is
started again after a short pause; its jobs come back through the reaper.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("boundq.supervisor")

RESTART_PAUSE_S = 1.0


def supervise(processes: int, argv: Sequence[str], poll_s: float = 0.2) -> int:
    env = {**os.environ, "WORKER_PROCESSES": "1"}
    stopping = False
    children: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        child = subprocess.Popen(list(argv), env=env)
        log.info("started worker process %d", child.pid)
        return child

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    children.extend(start() for _ in range(processes))
    restart_at: dict[int, float] = {}
    while True:
        if stopping:
            codes = [child.wait() for child in children]
            return 0 if all(code in (0, -signal.SIGTERM, -signal.SIGINT) for code in codes) else 1
        for index, child in enumerate(children):
            code = child.poll()
            if code is None:
                continue
            due = restart_at.setdefault(index, time.monotonic() + RESTART_PAUSE_S)
            if time.monotonic() >= due:
                log.warning("worker process %d exited with %s; starting another", child.pid, code)
                children[index] = start()
                restart_at.pop(index, None)
        time.sleep(poll_s)
