"""The processes of a flood: `boundq serve`, Locust, and any extra `boundq worker`s, each
started and stopped here.

All are children of the flood runner, each in its own session and process group (as
separate hosts would be: a signal to the runner's group never reaches them; the runner
stops each with SIGTERM and waits), with their output in the run folder. Locust always
runs as its own process (`python -m locust`): it monkey-patches with gevent, which must
never reach the core or pytest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

# The children run in the caller's working directory (its .env, its relative --out, as any
# boundq command) and import the same boundq as this process (core/children.py).
from boundq.core.children import child_env as child_env
from boundq.core.cpus import confine

LOCUST_FILES = Path(__file__).resolve().parent

# scenario -> (locust file, user classes)
SCENARIOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mixed": (str(LOCUST_FILES / "locustfile.py"), ("MixedUser",)),
    "create": (str(LOCUST_FILES / "locustfile.py"), ("CreateUser",)),
    "bulk": (str(LOCUST_FILES / "locustfile.py"), ("BulkUser",)),
    "arrival": (str(LOCUST_FILES / "locustfile.py"), ("ArrivalUser",)),
    "step": (str(LOCUST_FILES / "step.py"), ()),
    # flow control (loadtests/flow_scenarios.py): a flooding queue beside a steady one
    "tenants": (str(LOCUST_FILES / "locustfile.py"), ("FloodQueueUser", "SteadyQueueUser")),
    "ratelimited": (str(LOCUST_FILES / "locustfile.py"), ("FloodQueueUser", "SteadyQueueUser")),
    # fan-out/fan-in graphs beside the create flood (loadtests/workflow_scenario.py)
    "workflow": (str(LOCUST_FILES / "locustfile.py"), ("CreateUser", "WorkflowUser")),
}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the flood runner dies (Linux), so a killed
    runner leaves no server or load generator behind."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_server(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "boundq", "serve"],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_die_with_parent)


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"boundq serve exited with {proc.returncode} before it was ready")
        with (contextlib.suppress(urllib.error.URLError, OSError),
              urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"boundq serve was not ready within {timeout:.0f}s")


def wait_http(url: str, proc: subprocess.Popen[bytes], give_up: Callable[[], bool],
              timeout: float = 60) -> None:
    """Until `url` answers 200 (Locust's web UI is listening), the process exits, or
    `give_up()` says so (a signal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not give_up():
        with (contextlib.suppress(urllib.error.URLError, OSError),
              urllib.request.urlopen(url, timeout=2) as resp):
            if resp.status == 200:
                return
        time.sleep(0.1)


def locust_argv(scenario: str, base: str, csv_prefix: Path, users: int, spawn_rate: float,
                duration_s: float | None, ui_port: int | None, processes: int = 1,
                classes: tuple[str, ...] | None = None) -> list[str]:
    locustfile, default_classes = SCENARIOS[scenario]
    classes = default_classes if classes is None else classes
    argv = [sys.executable, "-m", "locust", "-f", locustfile, "--host", base,
            "--csv", str(csv_prefix), "--csv-full-history", "--only-summary",
            "--stop-timeout", "10", "--exit-code-on-error", "0", "--loglevel", "WARNING",
            "-u", str(users), "-r", str(spawn_rate)]
    if ui_port is None:
        argv += ["--headless"]
        if duration_s is not None and scenario != "step":
            argv += ["-t", f"{int(duration_s)}s"]
    else:
        argv += ["--web-host", "127.0.0.1", "--web-port", str(ui_port)]
    if processes > 1:
        argv += ["--processes", str(processes)]
    return [*argv, *classes]


def start_locust(argv: Sequence[str], env: dict[str, str], log_path: Path, nice: int = 0,
                 cpus: frozenset[int] | None = None) -> subprocess.Popen[bytes]:
    """Locust at `nice` (added to ours) and on `cpus` (the API's, API_CPUS): the load
    generator stands in for clients on other machines, so on a shared one it can be made
    to take only the CPU the server, the workers and PostgreSQL leave (--locust-nice),
    and it never runs on the CPU the API leaves to the workers."""
    def preexec() -> None:
        _die_with_parent()
        if nice > 0:
            os.nice(nice)
        confine(cpus)

    with open(log_path, "ab") as log:
        return subprocess.Popen(list(argv), env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=preexec)


def stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
         timeout: float = 30, tick: Callable[[], None] | None = None) -> int | None:
    """Signal one process we started, wait (calling `tick` twice a second: the runner
    prints what signals it got meanwhile), and kill it only if it does not end. Then
    whatever it left in its process group (Locust's forked workers, a supervisor's
    children) gets the same signal, and a kill if it lingers."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if tick is not None:
                tick()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.5)
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stop_group(proc.pid, sig)
    return proc.returncode


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, OSError):  # gone meanwhile
            if p.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(p.info["pid"]) == pgid:
                out.append(p.info["pid"])
    return out


def stop_group(pgid: int, sig: int = signal.SIGTERM, timeout: float = 10) -> list[int]:
    """End what is left of a process group we created (its leader has exited); returns
    the pids that were left."""
    left = group_members(pgid)
    if not left:
        return []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    deadline = time.monotonic() + timeout
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)
    return left


def start_worker(env: dict[str, str], log_path: Path, prefix: Sequence[str] = ()
                 ) -> subprocess.Popen[bytes]:
    """One extra `boundq worker` process (own session, own owner id); `prefix` runs it
    inside something, e.g. `unshare --net` for a network namespace of its own."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([*prefix, sys.executable, "-m", "boundq", "worker",
                                 "--processes", "1"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)


def can_unshare_net() -> bool:
    """Whether this process may start a child in a network namespace of its own."""
    try:
        done = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False  # no unshare(1), or it hung
    return done.returncode == 0
