"""Real worker processes, real signals: SIGKILL mid-job (the reaper recovers), SIGTERM
(graceful: released jobs run elsewhere), a supervisor with two children, a poison job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boundq.core.config import ENV_VARIABLES
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import REPO_ROOT, add_jobs, max_overlap, rows, scalar, wait_until

pytestmark = pytest.mark.slow

LEASE_S, REAP_S = 1.2, 0.2
SLACK_S = 3.0  # a second worker's start-up, polling, a loaded machine


class WorkerProcess:
    def __init__(self, db_url: str, log: Path, args: list[str], env: dict[str, str]) -> None:
        base = {k: v for k, v in os.environ.items()
                if k not in ENV_VARIABLES and k != "BOUNDQ_CRASH_AT"}
        base.update({
            "DATABASE_URL": db_url,
            "LEASE_SECONDS": str(LEASE_S),
            "HEARTBEAT_SECONDS": "0.3",
            "REAP_INTERVAL_SECONDS": str(REAP_S),
            "POLL_INTERVAL_SECONDS": "0.1",
            "SHUTDOWN_GRACE_SECONDS": "2",
            "RETRY_BASE_SECONDS": "0.05",
            "RETRY_MAX_SECONDS": "0.2",
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "info",
        })
        base.update(env)
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "boundq", "worker", *args],
            cwd=REPO_ROOT, env=base, stdout=self._out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.flush()

    def tail(self, lines: int = 30) -> str:
        self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill_group(self) -> None:
        """Cleanup: SIGKILL this process's own process group (it was started in a new
        session, so the group holds only this worker and its children)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._out.close()


@pytest.fixture
def spawn(db_url, tmp_path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(*args: str, **env: Any) -> WorkerProcess:
        worker = WorkerProcess(db_url, tmp_path / f"worker-{len(started)}.log", list(args),
                               {k.upper(): str(v) for k, v in env.items()})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill_group()


def _pid_of(owner: str) -> int:
    # owner = "<host>-<pid>-<random>"; the host may contain dashes.
    return int(owner.rsplit("-", 2)[1])


async def _processing_by_pid(conn) -> dict[int, int]:
    found = await rows(conn, "SELECT lease_owner FROM jobs WHERE status = 'processing'")
    counts: dict[int, int] = {}
    for r in found:
        pid = _pid_of(r["lease_owner"])
        counts[pid] = counts.get(pid, 0) + 1
    return counts


async def _all_success(conn, n: int) -> bool:
    return await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _no_overlapping_attempts(conn) -> None:
    found = await rows(conn, "SELECT job_id, claimed_at, finished_at FROM job_attempts")
    by_job: dict[int, list[tuple[Any, Any]]] = {}
    for r in found:
        by_job.setdefault(r["job_id"], []).append((r["claimed_at"], r["finished_at"]))
    for job_id, intervals in by_job.items():
        assert max_overlap(intervals) == 1, (job_id, intervals)


async def test_sigkill_mid_job_then_another_worker_finishes_everything(spawn, conn) -> None:
    ids = await add_jobs(conn, 8, kind="sleep", payload={"ms": 1500}, max_attempts=5)
    first = spawn(max_concurrent_jobs=4)

    async def four_running():
        return (await _processing_by_pid(conn)).get(first.pid) == 4

    await wait_until(four_running, 20, what=f"four jobs running in the worker\n{first.tail()}")
    first.signal(signal.SIGKILL)
    killed_at = await scalar(conn, "SELECT now()")
    assert first.wait(10) == -signal.SIGKILL
    killed = {r["id"] for r in await rows(
        conn, "SELECT id FROM jobs WHERE status = 'processing'")}
    assert len(killed) == 4
    # The killed attempts are still running as far as the database knows: the jobs rows
    # hold them, and their attempt rows are written only when the reaper ends them.
    assert await scalar(conn, "SELECT count(*) FROM job_attempts WHERE job_id = ANY(%s)",
                        (sorted(killed),)) == 0

    second = spawn(max_concurrent_jobs=4)
    await wait_until(lambda: _all_success(conn, len(ids)), 30,
                     what=f"every job done by the second worker\n{second.tail()}")

    for job_id in killed:
        found = await rows(conn, "SELECT attempt, owner, outcome::text AS outcome, error, "
                                 "claimed_at, finished_at FROM job_attempts WHERE job_id = %s "
                                 "ORDER BY attempt", (job_id,))
        assert [(a["attempt"], a["outcome"]) for a in found] == [(1, "lost"), (2, "success")]
        assert found[0]["error"] == "lease expired"
        assert _pid_of(found[0]["owner"]) == first.pid
        assert _pid_of(found[1]["owner"]) == second.pid
        recovery = (found[1]["claimed_at"] - killed_at).total_seconds()
        assert recovery <= LEASE_S + REAP_S + SLACK_S, recovery
    await _no_overlapping_attempts(conn)
    second.signal(signal.SIGTERM)
    assert second.wait(15) == 0, second.tail()


async def test_sigterm_releases_running_jobs_and_exits_zero(spawn, db_url, conn) -> None:
    grace = 0.5
    ids = await add_jobs(conn, 4, kind="sleep", payload={"ms": 60_000})
    worker = spawn(max_concurrent_jobs=4, shutdown_grace_seconds=grace)

    async def all_running():
        return (await _processing_by_pid(conn)).get(worker.pid) == 4

    await wait_until(all_running, 20, what=f"four jobs running\n{worker.tail()}")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(grace + 8)
    elapsed = time.monotonic() - started
    assert code == 0, worker.tail()
    assert elapsed <= grace + 5, elapsed

    found = await rows(conn, "SELECT j.status::text AS status, j.attempts, j.last_error, "
                             "a.outcome::text AS outcome, a.error FROM jobs j "
                             "JOIN job_attempts a ON a.job_id = j.id")
    assert len(found) == 4
    for r in found:
        assert (r["status"], r["attempts"], r["outcome"]) == ("new", 1, "lost"), r
        assert r["error"] == r["last_error"] == "released at worker shutdown"

    # A second worker runs them (made short: the release, not the sleep, is under test).
    await conn.execute("UPDATE jobs SET payload = '{\"ms\": 20}'")
    second = Worker(fast_settings(), db_url)
    await second.start()
    try:
        await wait_until(lambda: _all_success(conn, len(ids)), 15, what="released jobs done")
    finally:
        await second.stop()
    outcomes = await rows(conn, "SELECT job_id, array_agg(outcome::text ORDER BY attempt) AS o "
                                "FROM job_attempts GROUP BY job_id")
    assert sorted(r["job_id"] for r in outcomes) == sorted(ids)
    assert all(r["o"] == ["lost", "success"] for r in outcomes), outcomes


async def test_sigterm_to_the_supervisor_drains_both_children(spawn, db_url, conn) -> None:
    grace = 0.5
    ids = await add_jobs(conn, 6, kind="sleep", payload={"ms": 60_000})
    parent = spawn(worker_processes=2, max_concurrent_jobs=3, shutdown_grace_seconds=grace)

    async def both_children_busy():
        counts = await _processing_by_pid(conn)
        return len(counts) == 2 and sum(counts.values()) == 6 and counts

    counts = await wait_until(both_children_busy, 30,
                              what=f"two children with three jobs each\n{parent.tail()}")
    children = set(counts)
    assert parent.pid not in children
    assert all(_alive(pid) for pid in children)

    parent.signal(signal.SIGTERM)  # the parent only: it passes the signal on
    assert parent.wait(grace + 10) == 0, parent.tail()
    assert not any(_alive(pid) for pid in children)
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'processing'") == 0
    released = await rows(conn, "SELECT owner, outcome::text AS outcome, error "
                                "FROM job_attempts")
    assert len(released) == 6
    assert {_pid_of(r["owner"]) for r in released} == children
    assert all((r["outcome"], r["error"]) == ("lost", "released at worker shutdown")
               for r in released)

    await conn.execute("UPDATE jobs SET payload = '{\"ms\": 20}'")
    finisher = Worker(fast_settings(), db_url)
    await finisher.start()
    try:
        await wait_until(lambda: _all_success(conn, len(ids)), 15, what="nothing lost")
    finally:
        await finisher.stop()


async def test_poison_job_is_dead_lettered_while_other_jobs_succeed(spawn, conn) -> None:
    max_attempts = 3
    await conn.execute("INSERT INTO jobs (name, kind, max_attempts) VALUES ('poison', 'poison', %s)",
                       (max_attempts,))
    poison_id = await scalar(conn, "SELECT id FROM jobs WHERE kind = 'poison'")
    others = await add_jobs(conn, 6, kind="sleep", payload={"ms": 100}, max_attempts=20)
    runs: list[Any] = []
    deadline = time.monotonic() + 60

    async def settled() -> bool:
        poison = await scalar(conn, "SELECT status::text FROM jobs WHERE id = %s", (poison_id,))
        return poison == "failed" and await _all_success(conn, len(others))

    while not await settled():
        assert time.monotonic() < deadline, "\n".join(r.tail() for r in runs[-2:])
        if not runs or runs[-1].proc.poll() is not None:
            runs.append(spawn("--handlers", "tests.poison_handlers", max_concurrent_jobs=2))
        await asyncio.sleep(0.1)

    row = (await rows(conn, "SELECT * FROM jobs WHERE id = %s", (poison_id,)))[0]
    assert (row["status"], row["attempts"]) == ("failed", max_attempts)
    found = await rows(conn, "SELECT owner, outcome::text AS outcome FROM job_attempts "
                             "WHERE job_id = %s ORDER BY attempt", (poison_id,))
    assert [a["outcome"] for a in found] == ["lost"] * max_attempts
    assert len({a["owner"] for a in found}) == max_attempts  # each run died on it
    killed = [r for r in runs if r.proc.poll() is not None]
    assert len(killed) >= max_attempts
    assert all(r.proc.returncode == -signal.SIGKILL for r in killed)
    survivor = runs[-1]
    if survivor.proc.poll() is None:
        survivor.signal(signal.SIGTERM)
        assert survivor.wait(15) == 0, survivor.tail()


@pytest.mark.parametrize(("sig", "target"), [
    (signal.SIGINT, "group"), (signal.SIGTERM, "group"),
    (signal.SIGINT, "parent"), (signal.SIGTERM, "parent"),
], ids=["sigint-group", "sigterm-group", "sigint-parent", "sigterm-parent"])
async def test_signals_drain_every_child_every_time(spawn, conn, sig, target) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole process group, and the supervisor
    forwards its own: each child gets it twice (here: three times, the last mid-drain).
    Every time, every child drains: running jobs are handed back (never dead-lettered,
    though each has a single attempt), every process exits 0, no traceback."""
    await add_jobs(conn, 6, kind="sleep", payload={"ms": 60_000}, max_attempts=1)
    parent = spawn("--processes", "2", max_concurrent_jobs=3, shutdown_grace_seconds=0.5)

    async def busy() -> dict[int, int] | bool:
        counts = await _processing_by_pid(conn)
        return len(counts) == 2 and sum(counts.values()) == 6 and counts

    children = set(await wait_until(busy, 30, what=f"both children busy\n{parent.tail()}"))
    for _ in range(2 if target == "group" else 1):
        if target == "group":
            os.killpg(parent.pid, sig)
        else:
            parent.signal(sig)
    await wait_until(lambda: _some_released(conn), 15, what=f"a release\n{parent.tail()}")
    if target == "group":
        os.killpg(parent.pid, sig)  # and once more while the children drain
    assert parent.wait(20) == 0, parent.tail()
    assert not any(_alive(pid) for pid in children)
    statuses = await rows(conn, "SELECT status::text AS s, count(*) AS n FROM jobs GROUP BY 1")
    assert {r["s"]: r["n"] for r in statuses} == {"new": 6}, statuses
    assert await scalar(conn, "SELECT count(*) FROM job_attempts WHERE error = "
                              "'released at worker shutdown'") == 6
    log = parent.tail(400)
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert log.count("worker stopped") == 2, log


async def _some_released(conn) -> bool:
    return await scalar(conn, "SELECT count(*) FROM job_attempts") > 0
