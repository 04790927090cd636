"""A child process measured from outside: its tree's peak memory while it runs, and the
CPU it used, read when it is reaped.

CPU comes from wait4(2): the kernel's rusage of the child includes the children it has
itself reaped (the worker processes a supervisor starts), start-up and shutdown included.
It must be the one call that reaps the child: Popen.poll() or wait() would reap it first
and the rusage would be lost, so `reap_nowait` replaces them.

Peak memory is VmHWM (the peak resident set of the address space exec made) summed over
the tree, sampled while the child runs. ru_maxrss would carry over the peak of this
(large) process from before exec.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

PROC = Path("/proc")


@dataclass
class Reaped:
    exit_code: int
    cpu_s: float  # user + system, the child and the children it reaped


def vm_hwm_kb(pid: int) -> int:
    """Peak resident set of process `pid` in KiB (0 if it is gone or unreadable)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_peak_rss_mb(pid: int) -> float:
    """Sum of the peaks of `pid` and its living descendants, MiB."""
    try:
        pids = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        pids = [pid]
    return sum(vm_hwm_kb(p) for p in pids) / 1024


def reap_nowait(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> Reaped | None:
    """Reap `proc` if it has exited (setting its returncode); None while it runs."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Reaped(proc.returncode, usage.ru_utime + usage.ru_stime)


def reap(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> Reaped:
    """Wait for `proc` to exit and reap it."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Reaped(proc.returncode, usage.ru_utime + usage.ru_stime)
