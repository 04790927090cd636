"""Migrations: every down undoes its up (compared by pg_dump --schema-only), up after down
rebuilds the same schema, concurrent migrate() calls take turns, rollback and refresh."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from boundq.core.errors import MigrationError
from boundq.core.migrate import (
    LATEST_VERSION,
    current_version,
    load_migrations,
    migrate,
    refresh,
    rollback,
)
from boundq.core.pgembed import EmbeddedPostgres, find_bindir
from tests.conftest import scratch_database
from tests.helpers import REPO_ROOT


@pytest.fixture
def empty_url(pg_cluster: EmbeddedPostgres) -> Iterator[str]:
    """A database with nothing in it (not cloned from the migrated template)."""
    with scratch_database(pg_cluster, "e", template="template0") as url:
        yield url


def schema(url: str) -> str:
    """The schema as pg_dump prints it, without comments, blank lines and psql
    meta-commands (\\restrict carries a random key)."""
    out = subprocess.run(
        [str(find_bindir() / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
         "--dbname", url],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    lines = [line for line in out.splitlines()
             if line.strip() and not line.startswith(("--", "\\"))]
    return "\n".join(lines)


async def version(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await current_version(conn)


def test_migration_files_pair_up() -> None:
    steps = load_migrations()
    assert [m.version for m in steps] == list(range(1, LATEST_VERSION + 1))
    assert all(m.up.strip() and m.down.strip() for m in steps)


async def test_every_down_undoes_its_up(empty_url) -> None:
    assert await migrate(empty_url, target=0) == []  # only the ledger
    dumps = {0: schema(empty_url)}
    assert "CREATE TABLE public.jobs" not in dumps[0]
    for step in load_migrations():
        assert await migrate(empty_url, target=step.version) == [step.version]
        dumps[step.version] = schema(empty_url)
        assert dumps[step.version] != dumps[step.version - 1]
    assert "CREATE TABLE public.jobs" in dumps[LATEST_VERSION]
    for step in reversed(load_migrations()):
        assert await rollback(empty_url, steps=1) == [step.version]
        assert schema(empty_url) == dumps[step.version - 1], f"down {step.version} left things"
        # up after down gives the same schema as the first up
        assert await migrate(empty_url, target=step.version) == [step.version]
        assert schema(empty_url) == dumps[step.version], f"up {step.version} differs the 2nd time"
        assert await rollback(empty_url, steps=1) == [step.version]
    assert await version(empty_url) == 0
    leftover = schema(empty_url)
    assert re.findall(r"CREATE (?:TABLE|TYPE|FUNCTION|INDEX) (\S+)", leftover) == [
        "public.boundq_migrations"]


async def test_concurrent_migrations_take_turns(empty_url) -> None:
    results = await asyncio.gather(*(migrate(empty_url) for _ in range(4)))
    applied = sorted(v for r in results for v in r)
    assert applied == list(range(1, LATEST_VERSION + 1)), results
    async with await psycopg.AsyncConnection.connect(empty_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT version FROM boundq_migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == list(range(1, LATEST_VERSION + 1))
        cur = await conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert (await cur.fetchone()) == (0,)


async def test_migrate_again_is_a_no_op(db_url) -> None:
    before = schema(db_url)
    assert await migrate(db_url) == []
    assert schema(db_url) == before


async def test_rollback_steps_and_bounds(empty_url) -> None:
    await migrate(empty_url)
    with pytest.raises(MigrationError):
        await rollback(empty_url, steps=0)
    assert await rollback(empty_url, steps=LATEST_VERSION + 5) == list(
        range(LATEST_VERSION, 0, -1))
    assert await version(empty_url) == 0
    assert await rollback(empty_url, steps=1) == []
    with pytest.raises(MigrationError):
        await migrate(empty_url, target=LATEST_VERSION + 1)


async def test_refresh_drops_data_and_rebuilds_the_schema(db_url) -> None:
    expected = schema(db_url)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO jobs (name) VALUES ('doomed')")
    undone, applied = await refresh(db_url)
    assert undone == list(range(LATEST_VERSION, 0, -1))
    assert applied == list(range(1, LATEST_VERSION + 1))
    assert schema(db_url) == expected
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM jobs")
        assert (await cur.fetchone()) == (0,)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "boundq", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


async def test_cli_migrate_rollback_refresh(empty_url) -> None:
    done = await asyncio.to_thread(_cli, empty_url, "migrate")
    assert done.returncode == 0, done.stderr
    assert await version(empty_url) == LATEST_VERSION
    done = await asyncio.to_thread(_cli, empty_url, "rollback", "--steps", "1")
    assert done.returncode == 0, done.stderr
    assert await version(empty_url) == LATEST_VERSION - 1
    done = await asyncio.to_thread(_cli, empty_url, "refresh")
    assert done.returncode == 0, done.stderr
    assert await version(empty_url) == LATEST_VERSION


async def test_migrate_when_reachable_waits_then_gives_up_on_a_dead_server() -> None:
    import time

    import psycopg

    from boundq.core.migrate import migrate_when_reachable
    from boundq.core.pgembed import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/none?connect_timeout=1"
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        await migrate_when_reachable(url, wait_s=1.5)
    assert 1.0 <= time.monotonic() - started < 6
