"""The phases of a flood that touch its processes: the load (with a partition of the
proxied worker in the middle), the drain, and stopping everything. Each loop waits on the
run's Interrupts instead of sleeping, and says what a signal changed."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from boundq.loadtests import processes as procs
from boundq.loadtests.hosts import Hosts
from boundq.loadtests.sampling import Progress, Sampler
from boundq.loadtests.signals import Interrupts
from boundq.loadtests.verify import unfinished

if TYPE_CHECKING:
    from boundq.loadtests.flood import FloodOptions


class FloodRun:
    """One flood's moving parts, so the phases can share them and the end can stop them."""

    def __init__(self, o: FloodOptions, out: TextIO, interrupts: Interrupts) -> None:
        self.o, self.out, self.interrupts = o, out, interrupts
        self.server: Any = None
        self.locust: Any = None
        self.sampler: Sampler | None = None
        self.hosts: Hosts | None = None
        self.notes: list[str] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def tick(self, stage: str) -> None:
        self.interrupts.announce(stage, self.out)

    def load_phase(self, progress: Progress) -> None:
        """Sample once a second until Locust ends (or its time is well past), or a
        signal stops the load; a partition of the proxied worker in the middle."""
        o = self.o
        assert self.sampler is not None
        limit = None if o.ui_port is not None else o.duration_s + 60
        started = time.monotonic()
        cut_at = o.duration_s / 3 if o.partition_s > 0 and self.hosts else None
        cut = False
        while self.locust.poll() is None:
            elapsed = time.monotonic() - started
            if cut_at is not None and not cut and elapsed >= cut_at:
                assert self.hosts is not None
                self.hosts.blackhole()
                cut = True
                progress.end()
                self.say(f"partition: the proxied worker's network black-holed for "
                         f"{o.partition_s:.0f} s")
            elif cut and cut_at is not None and elapsed >= cut_at + o.partition_s:
                assert self.hosts is not None
                self.hosts.heal()
                cut, cut_at = False, None
                progress.end()
                self.say("partition healed: its connections reset")
            progress.show(self.sampler.sample("load"))
            if limit is not None and elapsed > limit:
                progress.end()
                print("locust overran its time: stopping it", file=sys.stderr)
                break
            if self.interrupts.wait(1.0):
                progress.end()
                self.tick("load")
                break
        if cut and self.hosts is not None:
            self.hosts.heal()
        procs.stop(self.locust, signal.SIGTERM, timeout=30, tick=lambda: self.tick("load"))
        progress.show(self.sampler.sample("load"), force=True)

    def alone_phase(self, argv: list[str], env: dict[str, str], log: Path,
                    done: Callable[[], bool], limit_s: float) -> bool:
        """A Locust run before the load (the steady queue alone, flow scenarios) until
        done() says so (from the database), at most limit_s; False when a signal or the
        limit stopped it first."""
        proc = procs.start_locust(argv, env, log, self.o.locust_nice, self.o.locust_cpus)
        limit = time.monotonic() + limit_s
        try:
            while proc.poll() is None and time.monotonic() < limit:
                if done():
                    return True
                if self.interrupts.wait(0.25):
                    self.tick("load")
                    return False
            return False
        finally:
            procs.stop(proc, signal.SIGTERM, timeout=30, tick=lambda: self.tick("load"))

    def drain_phase(self, db_url: str, progress: Progress) -> bool:
        assert self.sampler is not None
        deadline = time.monotonic() + self.o.drain_timeout_s
        while time.monotonic() < deadline:
            self.tick("drain")
            if self.interrupts.abort_drain.is_set():
                return False
            sample = self.sampler.sample("drain")
            progress.show(sample)
            if sample.waiting + sample.processing == 0 and unfinished(db_url) == 0:
                progress.show(sample, force=True)
                return True
            if self.interrupts.wait_drain(1.0):
                progress.end()
                self.tick("drain")
                return False
        return False

    def stop_all(self) -> int | None:
        """Locust, the extra workers, the server: SIGTERM each, wait; in that order."""
        tick = lambda: self.tick("stop")  # noqa: E731
        procs.stop(self.locust, signal.SIGTERM, timeout=30, tick=tick)
        if self.hosts is not None:
            self.hosts.stop(tick)
        return procs.stop(self.server, signal.SIGTERM, timeout=60, tick=tick)
