"""The embedded PostgreSQL: start() is idempotent, and a cluster whose postmaster was
SIGKILLed (a stale postmaster.pid left behind) starts again."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from boundq.core.pgembed import EmbeddedPostgres, default_data_dir, find_bindir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_cluster() -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix="boundq-embed-test-"))
    os.chmod(root, 0o755)  # the server runs as an unprivileged user when we are root
    cluster = EmbeddedPostgres(root / "pg", fsync=False, max_connections=20)
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


def _postmaster_pid(cluster: EmbeddedPostgres) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _select_one(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT 1").fetchone()
        assert row is not None
        return int(row[0])


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_find_bindir_has_the_server_programs() -> None:
    bindir = find_bindir()
    assert (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


def test_start_twice_is_idempotent(small_cluster) -> None:
    url = small_cluster.start()
    pid = _postmaster_pid(small_cluster)
    port = small_cluster.port
    assert small_cluster.start() == url
    assert _postmaster_pid(small_cluster) == pid  # no second server
    assert small_cluster.port == port
    assert small_cluster.running()
    assert _select_one(url) == 1
    assert "running" in small_cluster.status()


def test_start_recovers_from_a_sigkilled_postmaster(small_cluster) -> None:
    url = small_cluster.start()
    pid = _postmaster_pid(small_cluster)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, "postmaster did not die"
        time.sleep(0.05)
    pid_file = small_cluster.data_dir / "postmaster.pid"
    assert pid_file.exists(), "the test needs a stale postmaster.pid"
    assert not small_cluster.running()

    restarted = small_cluster.start()
    assert restarted == small_cluster.url()
    assert _postmaster_pid(small_cluster) != pid
    assert small_cluster.running()
    assert _select_one(restarted) == 1
    assert restarted == url  # the port was free again, so the URL did not change


def test_stop_when_stopped_returns_false(small_cluster) -> None:
    small_cluster.start()
    assert small_cluster.stop() is True
    assert not small_cluster.running()
    assert small_cluster.stop() is False
    assert "stopped" in small_cluster.status()
    small_cluster.start()
    assert small_cluster.running()


def test_default_data_dir_is_under_the_project_or_a_private_temp_dir(tmp_path) -> None:
    found = default_data_dir(tmp_path)
    assert found.name == "pg"
    assert found == tmp_path.resolve() / ".boundq" / "pg" or "boundq-" in str(found)
