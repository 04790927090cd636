"""A streaming replica of the embedded cluster (`boundq db start --replica`).

A sibling data directory (`.boundq/pg-replica` beside `.boundq/pg`) made by pg_basebackup
from the running primary, started as a hot standby on a port of its own. It streams
through a physical replication slot, so the primary keeps the WAL the replica has not
received yet; the primary caps what a slot may keep (pgembed.MAX_SLOT_WAL_KEEP), and a
replica that fell behind that cap is made again from a fresh base backup on its next
start. The primary's address is passed on each start, so a primary that moved to another
port is followed.

As root, pg_basebackup runs as the `postgres` user like initdb and pg_ctl.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

from boundq.core.errors import EmbeddedPostgresError
from boundq.core.pgembed import (
    MAX_WAL_SENDERS,
    SUPERUSER,
    EmbeddedPostgres,
    default_data_dir,
)

SLOT = "boundq_replica"
REPLICA_DIR_SUFFIX = "-replica"
APPLICATION_NAME = "boundq-replica"
_HBA_REPLICATION = re.compile(r"^\s*host\w*\s+replication\s", re.MULTILINE)


class EmbeddedReplica(EmbeddedPostgres):
    """The replica's cluster directory and the commands that manage it; `primary` is the
    embedded cluster it follows."""

    def __init__(self, primary: EmbeddedPostgres, data_dir: Path | None = None,
                 slot: str = SLOT) -> None:
        super().__init__(
            data_dir or primary.data_dir.with_name(primary.data_dir.name + REPLICA_DIR_SUFFIX),
            fsync=primary.fsync, host=primary.host, max_connections=primary.max_connections,
            bindir=primary.bindir)
        self.primary = primary
        self.slot = slot

    # Files of its own beside the primary's (they share the parent directory).
    @property
    def port_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.port"

    @property
    def lock_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.lock"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    # --- the primary's side ---------------------------------------------------------------
    def _require_primary(self) -> None:
        if not self.primary.running():
            raise EmbeddedPostgresError(
                f"the replica follows the embedded cluster ({self.primary.data_dir}), which "
                "is not running: `boundq db start --replica` starts both")

    def _primary_sql(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg  # local: only the embedded path needs a sync connection

        with psycopg.connect(self.primary.url("postgres"), autocommit=True,
                             connect_timeout=10) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def _ensure_replication_access(self) -> None:
        """The primary's pg_hba must let the superuser connect for replication over the
        loopback. initdb's file has such lines; one is added only when none is there."""
        hba = self.primary.data_dir / "pg_hba.conf"
        text = hba.read_text()
        if _HBA_REPLICATION.search(text):
            return
        with hba.open("a") as handle:
            handle.write(f"\n# boundq: the embedded replica streams over the loopback\n"
                         f"host replication {SUPERUSER} {self.host}/32 trust\n")
        self._primary_sql("SELECT pg_reload_conf()")

    def slot_state(self) -> str | None:
        """The slot's wal_status on the primary ('reserved', 'extended', 'unreserved',
        'lost'), or None when there is no such slot."""
        rows = self._primary_sql(
            "SELECT coalesce(wal_status, 'reserved') FROM pg_replication_slots "
            "WHERE slot_name = %s", (self.slot,))
        return str(rows[0][0]) if rows else None

    def _recreate_slot(self) -> None:
        """A fresh slot that reserves WAL from now on (an old one may be lost, or hold
        WAL back to a replica that no longer exists)."""
        rows = self._primary_sql("SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                                 (self.slot,))
        if rows and rows[0][0]:
            raise EmbeddedPostgresError(
                f"replication slot {self.slot} is in use by another standby; stop it first")
        if rows:
            self._primary_sql("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        self._primary_sql("SELECT pg_create_physical_replication_slot(%s, true)", (self.slot,))

    def drop_slot(self) -> None:
        """Release the WAL the slot holds (when the replica is destroyed)."""
        with contextlib.suppress(Exception):
            self._primary_sql(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active", (self.slot,))

    # --- lifecycle --------------------------------------------------------------------------
    def _init(self) -> None:
        """A base backup of the running primary, marked as a standby."""
        self._require_primary()
        self._ensure_replication_access()
        self._recreate_slot()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True)
        self._chown_to_service_user(self.data_dir)
        self.data_dir.chmod(0o700)
        argv = [str(self._bin / "pg_basebackup"),
                "-h", self.primary.host, "-p", str(self.primary.port), "-U", SUPERUSER,
                "-D", str(self.data_dir), "-X", "stream", "-S", self.slot,
                "--checkpoint=fast", "--no-password"]
        if not self.fsync:
            argv.append("--no-sync")
        result = self._run(argv, timeout=600)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.drop_slot()
            raise EmbeddedPostgresError(
                f"pg_basebackup failed: {result.stderr.strip() or result.stdout.strip()}")
        signal_file = self.data_dir / "standby.signal"
        signal_file.touch()
        self._chown_to_service_user(signal_file)

    def start(self, timeout: float = 60) -> str:
        """Make the replica if needed (or again, when the primary dropped the WAL it
        still needed) and start it; returns its URL. The primary must be running."""
        self._require_primary()
        if self.running() and not self._follows_primary():
            self.stop()  # the primary moved to another port: start again with the new one
        if self.initialised() and not self.running() and self.slot_state() in (None, "lost"):
            # Stopped too long: the primary no longer has the WAL to bring it up to date.
            shutil.rmtree(self.data_dir, ignore_errors=True)
        return super().start(timeout)

    def _follows_primary(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=5) as conn:
                row = conn.execute("SELECT current_setting('primary_conninfo')").fetchone()
        except psycopg.Error:
            return True  # cannot tell: leave it as it is
        return row is not None and f"port={self.primary.port} " in f"{row[0]} "

    def _server_options(self, port: int) -> list[str]:
        primary = (f"host={self.primary.host} port={self.primary.port} user={SUPERUSER} "
                   f"application_name={APPLICATION_NAME}")
        # A hot standby needs max_connections (and the walsender figures) at least the
        # primary's: read them from the primary itself.
        rows = self._primary_sql("SELECT current_setting('max_connections')::int")
        max_connections = max(int(rows[0][0]), self.max_connections) if rows else 0
        return [
            f"-p {port}",
            f"-c listen_addresses={self.host}",
            f"-c unix_socket_directories={self.data_dir}",
            f"-c max_connections={max_connections or self.max_connections}",
            f"-c max_wal_senders={MAX_WAL_SENDERS}",
            f"-c max_replication_slots={MAX_WAL_SENDERS}",
            f"-c fsync={'on' if self.fsync else 'off'}",
            "-c shared_buffers=128MB",
            "-c hot_standby=on",
            "-c " + shlex.quote(f"primary_conninfo={primary}"),
            f"-c primary_slot_name={self.slot}",
            "-c tcp_keepalives_idle=10",
            "-c tcp_keepalives_interval=5",
            "-c tcp_keepalives_count=3",
            "-c client_connection_check_interval=5s",
        ]

    def _after_start(self) -> None:
        """A standby refuses writes: there is no database to create (it came with the
        base backup)."""

    def destroy(self) -> None:
        with contextlib.suppress(EmbeddedPostgresError):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for path in (self.port_file, self.log_file, self.lock_file):
            path.unlink(missing_ok=True)
        if self.primary.running():
            self.drop_slot()

    def status(self) -> str:
        text = super().status()
        if self.running() and (state := self._safe_slot_state()):
            text += f", slot {self.slot}: {state}"
        return text

    def _safe_slot_state(self) -> str | None:
        import psycopg

        try:
            return self.slot_state() if self.primary.running() else None
        except (psycopg.Error, OSError):  # informational: a primary mid-restart is no error
            return None


def embedded_replica(project_root: Path | None = None) -> EmbeddedReplica:
    return EmbeddedReplica(EmbeddedPostgres(default_data_dir(project_root)))
