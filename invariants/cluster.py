"""The PostgreSQL cluster the invariant tests own: start, template, clones, crashes.

One throwaway cluster per session (fsync off: nothing here survives an OS crash, and no
OS crash is simulated). synchronous_commit stays ON for the test role: an immediate stop
must not lose a commit that was acknowledged, or `no_lost_job` would fail for a reason
that is the test cluster's, not boundq's. A migrated template database (with the audit
trigger) is cloned for each example and each scenario.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from boundq.core.migrate import migrate
from boundq.core.pgembed import SUPERUSER, EmbeddedPostgres
from invariants.audit import INSTALL as AUDIT_INSTALL

TEMPLATE = "inv_template"


class Cluster:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="boundq-inv-"))
        os.chmod(self.root, 0o755)  # the server runs as an unprivileged user when we are root
        self.pg = EmbeddedPostgres(self.root / "pg", fsync=False, max_connections=300)
        self.restarts = 0

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.pg.start()
        with self.admin() as conn:
            conn.execute(f"ALTER ROLE {SUPERUSER} SET synchronous_commit = on")
            conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
            conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        asyncio.run(migrate(self.url(TEMPLATE)))
        with psycopg.connect(self.url(TEMPLATE), autocommit=True) as conn:
            conn.execute(AUDIT_INSTALL)
            # The change log on (`boundq events on`), for event_log_path. The template has
            # no job yet, so nothing was missed: the horizon goes back to where a log that
            # was never trimmed has it, and the checker reads every log from its create.
            conn.execute("SELECT boundq_job_events_switch(true)")
            conn.execute("UPDATE job_events_horizon SET txid = '0', seq = 0")

    def destroy(self) -> None:
        self.pg.destroy()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def port(self) -> int:
        return self.pg.port

    def url(self, database: str) -> str:
        return self.pg.url(database)

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5)

    # --- databases -------------------------------------------------------------------------
    def clone(self, prefix: str = "inv") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        return name

    def drop(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # --- faults ----------------------------------------------------------------------------
    def crash_restart(self, down_s: float = 0.0) -> None:
        """`pg_ctl stop -m immediate` (no shutdown checkpoint: crash recovery at start)."""
        self.pg.stop(mode="immediate")
        if down_s > 0:
            time.sleep(down_s)
        self.pg.start()
        self.restarts += 1

    def running(self) -> bool:
        return self.pg.running()

    def terminate(self, database: str, app_names: tuple[str, ...]) -> int:
        """pg_terminate_backend for boundq sessions of one database; returns how many."""
        with self.admin() as conn:
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND application_name = ANY(%s)",
                (database, list(app_names)),
            ).fetchone()
        return int(row[0]) if row else 0
