"""Numbered up/down SQL migrations, applied under an advisory lock.

Files live in core/migrations as NNNN_name.up.sql and NNNN_name.down.sql. Each step runs
in its own transaction together with its bookkeeping row, so a failed step leaves the
schema at the previous version. The session advisory lock makes two processes that start
together take turns: the second sees the first's work and has nothing left to do.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from boundq.core.errors import MigrationError

log = logging.getLogger("boundq.migrate")

# Any constant works as long as every boundq process uses the same one.
MIGRATION_LOCK_KEY = 0x626F756E6471  # "boundq"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    up: str
    down: str


def load_migrations() -> list[Migration]:
    ups: dict[int, tuple[str, str]] = {}
    downs: dict[int, str] = {}
    for entry in resources.files("boundq.core.migrations").iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version, name, direction = int(match[1]), match[2], match[3]
        text = entry.read_text(encoding="utf-8")
        if direction == "up":
            ups[version] = (name, text)
        else:
            downs[version] = text
    if set(ups) != set(downs):
        raise MigrationError(f"migrations without a pair: {sorted(set(ups) ^ set(downs))}")
    versions = sorted(ups)
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration numbers must run 1..n without gaps: {versions}")
    return [Migration(v, ups[v][0], ups[v][1], downs[v]) for v in versions]


LATEST_VERSION = len(load_migrations())

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS boundq_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def current_version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The applied version, 0 on an empty database."""
    cur = await conn.execute("SELECT to_regclass('boundq_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM boundq_migrations")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _locked_steps(url: str, target: int, *, up: bool) -> list[int]:
    migrations = load_migrations()
    if not 0 <= target <= len(migrations):
        raise MigrationError(f"no schema version {target}; known: 0..{len(migrations)}")
    done: list[int] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(_CREATE_LEDGER)
            version = await current_version(conn)
            if up:
                steps = [m for m in migrations if version < m.version <= target]
            else:
                steps = [m for m in reversed(migrations) if target < m.version <= version]
            for step in steps:
                try:
                    async with conn.transaction():
                        await conn.execute(step.up if up else step.down)
                        if up:
                            await conn.execute(
                                "INSERT INTO boundq_migrations (version, name) VALUES (%s, %s)",
                                (step.version, step.name),
                            )
                        else:
                            await conn.execute(
                                "DELETE FROM boundq_migrations WHERE version = %s", (step.version,)
                            )
                except psycopg.Error as exc:
                    where = "up" if up else "down"
                    raise MigrationError(
                        f"migration {step.version:04d}_{step.name} ({where}) failed: {exc}"
                    ) from exc
                done.append(step.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return done


async def migrate(url: str, target: int | None = None) -> list[int]:
    """Apply pending migrations up to `target` (latest by default); returns versions applied."""
    return await _locked_steps(url, LATEST_VERSION if target is None else target, up=True)


async def migrate_when_reachable(url: str, wait_s: float = 60.0) -> list[int]:
    """migrate(), waiting up to `wait_s` for the database: a worker started while
    PostgreSQL restarts waits for it instead of exiting."""
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        try:
            return await migrate(url)
        except psycopg.OperationalError as exc:
            if time.monotonic() + delay > deadline:
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("database not reachable yet (%s); retrying in %.1fs", first, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def rollback(url: str, steps: int = 1) -> list[int]:
    """Undo the last `steps` migrations; returns the versions undone."""
    if steps < 1:
        raise MigrationError("--steps must be at least 1")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        version = await current_version(conn)
    return await _locked_steps(url, max(version - steps, 0), up=False)


async def refresh(url: str) -> tuple[list[int], list[int]]:
    """Roll everything back and migrate again (drops all job data)."""
    undone = await _locked_steps(url, 0, up=False)
    return undone, await migrate(url)


async def schema_is_current(conn: psycopg.AsyncConnection[Any]) -> bool:
    return await current_version(conn) == LATEST_VERSION
