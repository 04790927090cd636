"""Ctrl-C and SIGTERM for the flood runner: recorded, never raised.

The handlers only count the signal and set events; the runner's loops wait on those
events instead of sleeping, and print what happens next. Nothing raises
KeyboardInterrupt, so no traceback can come out of whatever the runner was doing when
the signal landed (a query, a child's wait, a file write).

  first signal    stop the load (Locust gets SIGTERM); the drain and the verification
                  still run, and the verdict is printed
  second signal   abort the drain; the server is still stopped gracefully (SIGTERM,
                  then wait), and what finished is verified
  later ones      noted; the runner is already on its way out

Both SIGINT and SIGTERM are installed explicitly: a process started in the background
by a non-interactive shell inherits SIGINT *ignored* (POSIX job control), and Python
leaves an ignored SIGINT ignored, so `make flood-ui &` from a script could not be
stopped with SIGINT before.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, TextIO

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    def __init__(self) -> None:
        self.count = 0
        self.stop_load = threading.Event()
        self.abort_drain = threading.Event()
        self.names: list[str] = []
        self._pending: list[str] = []
        self._previous: dict[int, Any] = {}
        self.installed = False

    # --- the handler: record only (printing from a handler can re-enter the stream) ---
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.names.append(signal.Signals(signum).name)
        if self.count == 1:
            self.stop_load.set()
        else:
            self.abort_drain.set()
        self._pending.append(signal.Signals(signum).name)

    def install(self) -> Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # signals reach only the main thread; a test calling us elsewhere
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        self.installed = True
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
        self.installed = False

    # --- what the runner's loops call ------------------------------------------------
    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True at once when the load should stop."""
        return self.stop_load.wait(seconds)

    def wait_drain(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True at once when the drain should be aborted."""
        return self.abort_drain.wait(seconds)

    def take(self) -> list[str]:
        """Names of the signals received since the last call."""
        taken, self._pending = self._pending, []
        return taken

    def announce(self, stage: str, out: TextIO) -> None:
        """One line per signal received since the last call, saying what happens now."""
        for name in self.take():
            if stage in ("start", "load"):
                text = ("stopping the load; then the drain and the verification "
                        "(Ctrl-C again aborts the drain)")
                if self.count > 1:
                    text = "aborting: the drain will be skipped; the server still stops gracefully"
            elif stage == "drain":
                text = ("aborting the drain; the server still stops gracefully (SIGTERM, "
                        "wait), then what finished is verified") if self.count > 1 else \
                    "draining (the load has ended); Ctrl-C again aborts the drain"
            else:
                text = "already stopping: waiting for the server to exit, then the verdict"
            print(f"\n{name}: {text}", file=out, flush=True)
