"""The embedded PostgreSQL: a private cluster made from the machine's server binaries.

initdb and pg_ctl refuse to run as root, so as root only those programs run as the
unprivileged `postgres` user (Python itself stays as it is). That user must be able to
enter every parent of the data directory; when it cannot reach the checkout, the cluster
lives in a temp directory keyed by the project path. Nobody's permissions are loosened.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from boundq.core.errors import EmbeddedPostgresError

SUPERUSER = "postgres"
DATABASE = "boundq"
_SERVICE_USER = "postgres"
_PORT_FILE = "boundq.port"
MAX_WAL_SENDERS = 10  # PostgreSQL's default, stated: a replica's must be at least this
MAX_SLOT_WAL_KEEP = "1GB"

INSTALL_HINT = (
    "no PostgreSQL server binaries found (initdb, pg_ctl): install them "
    "(on Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL to a running server"
)


def find_bindir() -> Path:
    """pg_config --bindir, then the newest /usr/lib/postgresql/*/bin, then PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))

    def version_key(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    candidates += [Path(p) for p in found]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise EmbeddedPostgresError(INSTALL_HINT)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _service_user_can_enter(path: Path) -> bool:
    """True when the service user can traverse every parent of `path`."""
    try:
        entry = pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        return False
    groups = set(os.getgrouplist(_SERVICE_USER, entry.pw_gid))
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            ok = bool(st.st_mode & 0o100)
        elif st.st_gid in groups:
            ok = bool(st.st_mode & 0o010)
        else:
            ok = bool(st.st_mode & 0o001)
        if not ok:
            return False
    return True


def default_data_dir(project_root: Path | None = None) -> Path:
    root = (project_root or Path.cwd()).resolve()
    wanted = root / ".boundq" / "pg"
    if os.geteuid() != 0 or _service_user_can_enter(root):
        return wanted
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"boundq-{digest}" / "pg"


@dataclass
class EmbeddedPostgres:
    """One cluster directory and the commands that manage it."""

    data_dir: Path
    fsync: bool = True
    host: str = "127.0.0.1"
    max_connections: int = 300
    bindir: Path | None = None

    @property
    def _bin(self) -> Path:
        if self.bindir is None:
            self.bindir = find_bindir()
        return self.bindir

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    @property
    def port_file(self) -> Path:
        return self.data_dir.parent / _PORT_FILE

    @property
    def lock_file(self) -> Path:
        return self.data_dir.parent / "cluster.lock"

    @property
    def port(self) -> int:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return 0

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    # --- running the server programs --------------------------------------------------
    def _as_service_user(self, argv: Sequence[str]) -> list[str]:
        if os.geteuid() != 0:
            return list(argv)
        try:
            pwd.getpwnam(_SERVICE_USER)
        except KeyError:
            raise EmbeddedPostgresError(
                f"running as root needs the unprivileged '{_SERVICE_USER}' user to run the "
                "server (the postgresql package creates it), or set DATABASE_URL"
            ) from None
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", _SERVICE_USER, "--", *argv]
        return ["su", _SERVICE_USER, "-s", "/bin/sh", "-c", shlex.join(argv)]

    def _run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._as_service_user(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def _chown_to_service_user(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        entry = pwd.getpwnam(_SERVICE_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialises init/start/stop of one cluster between processes."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- lifecycle -----------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown_to_service_user(self.data_dir.parent)
        self._chown_to_service_user(self.data_dir)
        os.chmod(self.data_dir, 0o700)
        result = self._run(
            [
                str(self._bin / "initdb"),
                "-D", str(self.data_dir),
                "-U", SUPERUSER,
                "--auth=trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            timeout=180,
        )
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def running(self) -> bool:
        if not self.initialised():
            return False
        result = self._run([str(self._bin / "pg_ctl"), "status", "-D", str(self.data_dir)])
        return result.returncode == 0

    def _clear_stale_pid(self) -> None:
        """A postmaster.pid whose process is gone (a crash, a killed machine) is stale."""
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists() or self.running():
            return
        with contextlib.suppress(OSError):
            pid_file.unlink()

    def start(self, timeout: float = 60) -> str:
        """Initialise if needed and start; returns the URL. Idempotent, safe to race."""
        with self._lock():
            if not self.initialised():
                self._init()
            if self.running() and self.port and _port_in_use(self.port, self.host):
                return self.url()
            self._clear_stale_pid()
            port = self.port
            if not port or _port_in_use(port, self.host):
                port = free_port(self.host)
                self.port_file.write_text(f"{port}\n")
            options = self._server_options(port)
            self.log_file.touch(exist_ok=True)
            self._chown_to_service_user(self.log_file)
            result = self._run(
                [
                    str(self._bin / "pg_ctl"),
                    "start",
                    "-D", str(self.data_dir),
                    "-l", str(self.log_file),
                    "-w",
                    "-t", str(int(timeout)),
                    "-o", " ".join(options),
                ],
                timeout=timeout + 10,
            )
            if result.returncode != 0:
                tail = self.log_tail()
                raise EmbeddedPostgresError(f"pg_ctl start failed: {result.stderr.strip()}\n{tail}")
        self._after_start()
        return self.url()

    def _server_options(self, port: int) -> list[str]:
        """The postgres command line (pg_ctl -o). Streaming replication is on (a replica
        made by `boundq db start --replica` follows this cluster, core/pgreplica.py): WAL
        at the replica level, walsenders and slots, and a cap on the WAL a slot may keep
        so a replica left stopped cannot fill the disk (it is rebuilt instead)."""
        return [
            f"-p {port}",
            f"-c listen_addresses={self.host}",
            f"-c unix_socket_directories={self.data_dir}",
            f"-c max_connections={self.max_connections}",
            f"-c fsync={'on' if self.fsync else 'off'}",
            f"-c synchronous_commit={'on' if self.fsync else 'off'}",
            f"-c full_page_writes={'on' if self.fsync else 'off'}",
            "-c shared_buffers=256MB",
            "-c idle_in_transaction_session_timeout=60s",
            "-c tcp_keepalives_idle=10",
            "-c tcp_keepalives_interval=5",
            "-c tcp_keepalives_count=3",
            "-c client_connection_check_interval=5s",
            "-c wal_level=replica",
            f"-c max_wal_senders={MAX_WAL_SENDERS}",
            f"-c max_replication_slots={MAX_WAL_SENDERS}",
            f"-c max_slot_wal_keep_size={MAX_SLOT_WAL_KEEP}",
        ]

    def _after_start(self) -> None:
        self._ensure_database()

    def _ensure_database(self) -> None:
        import psycopg  # local: only the embedded path needs a sync connection

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    if not exists:
                        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                            conn.execute(f'CREATE DATABASE "{DATABASE}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast", timeout: float = 60) -> bool:
        """Stop the server; returns False when it was not running."""
        with self._lock():
            if not self.running():
                return False
            result = self._run(
                [str(self._bin / "pg_ctl"), "stop", "-D", str(self.data_dir), "-m", mode, "-w",
                 "-t", str(int(timeout))],
                timeout=timeout + 10,
            )
            if result.returncode != 0:
                raise EmbeddedPostgresError(f"pg_ctl stop failed: {result.stderr.strip()}")
            return True

    def destroy(self) -> None:
        with contextlib.suppress(EmbeddedPostgresError):
            self.stop(mode="immediate")
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def status(self) -> str:
        if not self.initialised():
            return f"not initialised ({self.data_dir})"
        if self.running():
            return f"running on {self.host}:{self.port} ({self.data_dir})"
        return f"stopped ({self.data_dir})"


def embedded(project_root: Path | None = None) -> EmbeddedPostgres:
    return EmbeddedPostgres(default_data_dir(project_root))


def resolve_database_url(database_url: str | None, project_root: Path | None = None) -> str:
    """DATABASE_URL when set; otherwise start the embedded cluster and return its URL. A
    cluster this call started keeps running after the command: it says so, once."""
    if database_url:
        return database_url
    cluster = embedded(project_root)
    was_running = cluster.running()
    url = cluster.start()
    if not was_running:
        print(f"boundq: started the embedded PostgreSQL ({cluster.data_dir}, port "
              f"{cluster.port}); it keeps running after this command: `boundq db stop` "
              "(or `make clean`) stops it", file=sys.stderr)
    return url
