"""The test fixtures' choice of PostgreSQL (tests/pg_backend.py), against a Docker engine
that is really not there: DOCKER_HOST names a socket that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.pg_backend import BackendError, choose_backend, docker_engine

pytest.importorskip("docker")


@pytest.fixture
def no_engine(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}


def test_absent_engine_is_detected(no_engine: dict[str, str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", no_engine["DOCKER_HOST"])
    reachable, why = docker_engine()
    assert not reachable and why.startswith("no Docker engine reachable"), why


def test_container_asked_without_an_engine_falls_back_with_a_notice(
        no_engine: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", no_engine["DOCKER_HOST"])
    backend = choose_backend({"BOUNDQ_TEST_PG": "container"})
    assert backend.kind == "embedded"
    assert backend.notice and "BOUNDQ_TEST_PG=container, but no Docker engine reachable" \
        in backend.notice
    assert backend.header().startswith("PostgreSQL backend: embedded cluster -- ")
    assert choose_backend({}).header() == "PostgreSQL backend: embedded cluster"
    with pytest.raises(BackendError, match="require-container, but no Docker engine"):
        choose_backend({"BOUNDQ_TEST_PG": "require-container"})
    with pytest.raises(BackendError, match="use one of"):
        choose_backend({"BOUNDQ_TEST_PG": "docker"})


def _collect(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A real pytest session (collection only: no cluster starts) with this environment."""
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only",
                           "tests/test_pg_backend.py"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_pytest_header_says_which_backend_ran(no_engine: dict[str, str]) -> None:
    done = _collect({**no_engine, "BOUNDQ_TEST_PG": "container"})
    assert done.returncode == 0, done.stdout + done.stderr
    header = [line for line in done.stdout.splitlines() if line.startswith("PostgreSQL backend")]
    assert len(header) == 1 and "embedded cluster -- BOUNDQ_TEST_PG=container, but no " \
        "Docker engine reachable" in header[0], done.stdout
    strict = _collect({**no_engine, "BOUNDQ_TEST_PG": "require-container"})
    assert strict.returncode != 0
    assert "require-container, but no Docker engine reachable" in strict.stderr + strict.stdout
    assert "Traceback" not in strict.stderr + strict.stdout
