"""Real PostgreSQL for every test: one throwaway cluster per session, migrated once into a
template database, cloned per test with CREATE DATABASE ... TEMPLATE (tens of ms).

The cluster is the embedded one (local server binaries), or with BOUNDQ_TEST_PG=container
a testcontainers PostgreSQL when a Docker engine is reachable (tests/pg_backend.py); the
pytest header says which ran."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from boundq.core.config import Settings, load_settings
from boundq.core.migrate import migrate
from boundq.core.pgembed import EmbeddedPostgres
from tests.pg_backend import Backend, BackendError, ContainerPostgres, choose_backend

TEMPLATE = "boundq_template"
PgCluster = EmbeddedPostgres | ContainerPostgres
BACKEND = pytest.StashKey[Backend]()


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[BACKEND] = choose_backend()
    except BackendError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[BACKEND].header()


@pytest.fixture(scope="session")
def pg_cluster(pytestconfig: pytest.Config) -> Iterator[PgCluster]:
    if pytestconfig.stash[BACKEND].kind == "container":
        container = ContainerPostgres()
        try:
            container.start()
            yield container
        finally:
            container.destroy()
        return
    root = Path(tempfile.mkdtemp(prefix="boundq-test-"))
    os.chmod(root, 0o755)  # the server runs as an unprivileged user when we are root
    cluster = EmbeddedPostgres(root / "pg", fsync=False, max_connections=400)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_url(pg_cluster: PgCluster) -> str:
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = pg_cluster.url(TEMPLATE)
    asyncio.run(migrate(url))
    return url


@contextlib.contextmanager
def scratch_database(cluster: PgCluster, prefix: str, template: str = TEMPLATE
                     ) -> Iterator[str]:
    """A database cloned from `template` for as long as the block runs; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield cluster.url(name)
    finally:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_cluster: PgCluster, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with scratch_database(pg_cluster, "t") as url:
        yield url


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as connection:
        yield connection


def fast_settings(**overrides: Any) -> Settings:
    """Short leases and intervals so lease expiry and recovery happen within a test."""
    env = {
        "LEASE_SECONDS": "1.5",
        "HEARTBEAT_SECONDS": "0.3",
        "REAP_INTERVAL_SECONDS": "0.2",
        "POLL_INTERVAL_SECONDS": "0.1",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "RETRY_BASE_SECONDS": "0.05",
        "RETRY_MAX_SECONDS": "0.2",
    }
    env.update({k.upper(): str(v) for k, v in overrides.items()})
    return load_settings(env, dotenv=None)


@pytest.fixture
def settings() -> Settings:
    return fast_settings()
