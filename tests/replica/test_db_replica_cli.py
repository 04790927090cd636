"""`boundq db start --replica` end to end, as a user runs it in a project directory:
both clusters start, the replica streams what the primary writes, `db url --replica`,
`db status` and `db stop` cover both, and a second start reuses the replica."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from boundq.core.config import ENV_VARIABLES
from boundq.core.pgembed import embedded
from boundq.core.pgreplica import EmbeddedReplica
from tests.replica.conftest import sql, wait_for

pytestmark = pytest.mark.slow  # starts two clusters through the CLI


def boundq(project: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV_VARIABLES}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "boundq", *args], cwd=project, env=clean,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    try:
        yield tmp_path
    finally:
        primary = embedded(tmp_path)
        EmbeddedReplica(primary).destroy()
        primary.destroy()


def test_db_start_replica_end_to_end(project: Path) -> None:
    started = boundq(project, "db", "start", "--replica")
    assert started.returncode == 0, started.stderr
    primary_url, replica_url = started.stdout.split()
    assert primary_url != replica_url

    url = boundq(project, "db", "url", "--replica")
    assert url.returncode == 0 and url.stdout.strip() == replica_url
    assert boundq(project, "db", "url").stdout.strip() == primary_url

    assert sql(replica_url, "SELECT pg_is_in_recovery()")[0][0] is True
    assert sql(primary_url, "SELECT pg_is_in_recovery()")[0][0] is False
    slot = sql(primary_url, "SELECT active FROM pg_replication_slots "
                            "WHERE slot_name = 'boundq_replica'")
    assert slot == [(True,)]
    sql(primary_url, "CREATE TABLE seen (v int)")
    sql(primary_url, "INSERT INTO seen VALUES (42)")

    def replicated() -> bool:
        try:
            return sql(replica_url, "SELECT v FROM seen") == [(42,)]
        except psycopg.errors.UndefinedTable:
            return False

    wait_for(replicated, "the row on the replica")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        sql(replica_url, "INSERT INTO seen VALUES (1)")

    status = boundq(project, "db", "status")
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    assert lines[0].startswith("primary: running") and lines[1].startswith("replica: running")
    assert "slot boundq_replica: reserved" in lines[1]

    stopped = boundq(project, "db", "stop")
    assert stopped.returncode == 0 and stopped.stdout.split("\n")[:2] == [
        "replica stopped", "stopped"]
    assert boundq(project, "db", "status", "--replica").returncode == 3
    assert boundq(project, "db", "url", "--replica").returncode == 3

    # Again, with the primary's old port taken meanwhile: the primary moves to another
    # port, and the existing replica (no new base backup) follows it there.
    made = (EmbeddedReplica(embedded(project)).data_dir / "PG_VERSION").stat().st_ino
    old_port = embedded(project).port
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        again = boundq(project, "db", "start", "--replica")
    assert again.returncode == 0, again.stderr
    primary_url, replica_url = again.stdout.split()
    assert embedded(project).port != old_port
    sql(primary_url, "INSERT INTO seen VALUES (43)")
    wait_for(lambda: sql(replica_url, "SELECT count(*) FROM seen")[0][0] == 2,
             "the second row on the restarted replica")
    assert (EmbeddedReplica(embedded(project)).data_dir / "PG_VERSION").stat().st_ino == made


def test_replica_of_a_server_boundq_does_not_manage_is_refused(project: Path) -> None:
    done = boundq(project, "db", "start", "--replica",
                  env={"DATABASE_URL": "postgresql://someone@db.example:5432/app"})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "REPLICA_DATABASE_URL" in lines[0], done.stderr
    assert not embedded(project).initialised()  # nothing was started


def test_replica_url_setting_is_printed_as_is(project: Path) -> None:
    url = "postgresql://reader@replica.example:5432/boundq"
    done = boundq(project, "db", "url", "--replica", env={"REPLICA_DATABASE_URL": url})
    assert done.returncode == 0 and done.stdout.strip() == url
