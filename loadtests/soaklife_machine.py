"""What the machine did during each soak-life interval, read from /proc (Linux).

  machine_load_1m         the 1-minute load average as the interval ends
  machine_cpu_wait_pct    the share of the interval in which at least one runnable task
                          waited for a CPU (/proc/pressure/cpu, `some`)
  machine_io_wait_pct     the share in which at least one task waited for I/O
                          (/proc/pressure/io, `some`)
  machine_io_stall_max_ms the interval's worst second for I/O: the time within it in
                          which every task that had work waited for I/O
                          (/proc/pressure/io, `full`), read once a second by a thread

None of them is judged. Beside the database's readings they tell a stall of the machine
(a second in which every commit waited on the disk) from one of boundq: a share of a
minute dilutes a stall of half a second, its worst second does not. Without
/proc/pressure (another system, or a kernel built without pressure stall information)
they are left empty.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STALL_DIR = Path("/proc/pressure")
MACHINE_COLUMNS = ("machine_load_1m", "machine_cpu_wait_pct", "machine_io_wait_pct",
                   "machine_io_stall_max_ms")
TICK_S = 1.0


def stalled_us(root: Path, resource: str, line: str = "some") -> int | None:
    """The total of one line (`some` or `full`) of <root>/<resource>: microseconds, since
    boot, in which at least one task (`some`) or every task with work (`full`) waited."""
    try:
        text = (root / resource).read_text()
    except OSError:
        return None
    for row in text.splitlines():
        if row.startswith(f"{line} ") and "total=" in row:
            return int(row.rsplit("total=", 1)[1])
    return None


class MachineReadings:
    """The machine's readings of one interval at a time: `reading()` covers the time since
    the previous call (or since this object was made) and starts the next; `tick()`, once
    a second (`start()` runs a thread for it), finds the interval's worst second."""

    def __init__(self, root: Path = STALL_DIR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root, self.clock = root, clock
        self.at = clock()
        self.stalled = {r: stalled_us(root, r) for r in ("cpu", "io")}
        self._lock = threading.Lock()
        self._full = stalled_us(root, "io", "full")
        self._worst_ms: float | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """The `full` I/O stall since the last tick (a second ago, or less when a reading
        came between), kept if it is the interval's worst."""
        full = stalled_us(self.root, "io", "full")
        with self._lock:
            if full is not None and self._full is not None:  # ms within about a second
                self._worst_ms = max(self._worst_ms or 0.0, round((full - self._full) / 1000, 1))
            self._full = full

    def reading(self) -> dict[str, Any]:
        self.tick()
        now = self.clock()
        stalled = {r: stalled_us(self.root, r) for r in ("cpu", "io")}
        elapsed_us = (now - self.at) * 1e6
        shares: dict[str, float | None] = {}
        for resource, total in stalled.items():
            before = self.stalled[resource]
            shares[resource] = (round(100 * (total - before) / elapsed_us, 1)
                                if total is not None and before is not None and elapsed_us > 0
                                else None)
        with self._lock:
            worst, self._worst_ms = self._worst_ms, None
        self.at, self.stalled = now, stalled
        return {"machine_load_1m": round(os.getloadavg()[0], 2),
                "machine_cpu_wait_pct": shares["cpu"], "machine_io_wait_pct": shares["io"],
                "machine_io_stall_max_ms": worst}

    def start(self) -> MachineReadings:
        self._thread = threading.Thread(target=self._run, name="soak-life-machine",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._halt.wait(TICK_S):
            self.tick()
