"""A primary and a streaming replica made by the embedded cluster's own code
(core/pgreplica.py), in a temp directory, once per module: a base backup takes seconds.
The session's main cluster (tests/conftest.py) is not involved.

Each test gets a database created on the primary from a migrated template; it reaches
the replica through the WAL like everything else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from boundq.core.migrate import migrate
from boundq.core.pgembed import EmbeddedPostgres
from boundq.core.pgreplica import EmbeddedReplica

TEMPLATE = "boundq_template"
DEADLINE_S = 60.0  # generous: the machine is shared


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query.encode(), params or None)
        return cur.fetchall() if cur.description else []


def wait_for(condition: Any, what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def until(condition: Any, what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@dataclass
class Pair:
    primary: EmbeddedPostgres
    replica: EmbeddedReplica

    def caught_up(self, database: str = "postgres") -> bool:
        """The replica replayed everything the primary had written when this was called."""
        target = sql(self.primary.url(database), "SELECT pg_current_wal_insert_lsn()")[0][0]
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                done = sql(self.replica.url(database),
                           "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", target)[0][0]
            except psycopg.OperationalError:
                done = False  # e.g. the database does not exist there yet
            if done:
                return True
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.05)

    def pause_replay(self) -> None:
        sql(self.replica.url("postgres"), "SELECT pg_wal_replay_pause()")
        wait_for(lambda: sql(self.replica.url("postgres"),
                             "SELECT pg_get_wal_replay_pause_state()")[0][0] == "paused",
                 "replay to pause")

    def resume_replay(self) -> None:
        sql(self.replica.url("postgres"), "SELECT pg_wal_replay_resume()")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    root = Path(tempfile.mkdtemp(prefix="boundq-replica-test-"))
    os.chmod(root, 0o755)  # the server runs as an unprivileged user when we are root
    primary = EmbeddedPostgres(root / "pg", fsync=False, max_connections=100)
    replica = EmbeddedReplica(primary)
    try:
        primary.start()
        sql(primary.url("postgres"), f'CREATE DATABASE "{TEMPLATE}"')
        asyncio.run(migrate(primary.url(TEMPLATE)))
        replica.start()
        yield Pair(primary, replica)
    finally:
        replica.destroy()
        primary.destroy()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def pair_database(pair: Pair) -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL) of a fresh migrated database, present on both."""
    name = f"r_{uuid.uuid4().hex[:12]}"
    sql(pair.primary.url("postgres"), f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    try:
        pair.caught_up(name)
        yield pair.primary.url(name), pair.replica.url(name)
    finally:
        with contextlib.suppress(psycopg.Error):
            pair.resume_replay()
        sql(pair.primary.url("postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pair_db(pair: Pair) -> Iterator[tuple[str, str]]:
    with pair_database(pair) as urls:
        yield urls
