"""Settings: bad values fail with one line naming the variable, the heartbeat must fit
three times in the lease, `.env` is read and real environment variables win."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from boundq.core.config import ENV_VARIABLES, Settings, describe, load_settings, read_dotenv
from boundq.core.db import conninfo, pool_max_size
from boundq.core.errors import ConfigError
from tests.helpers import REPO_ROOT

BAD = [
    ("HTTP_PORT", "eighty"),
    ("HTTP_PORT", "70000"),
    ("NUM_WORKERS", "0"),
    ("NUM_WORKERS", "2.5"),
    ("MAX_CONCURRENT_JOBS", "-1"),
    ("MAX_CONCURRENT_JOBS", "many"),
    ("WORKER_PROCESSES", "0"),
    ("MAX_DB_CONNECTIONS", "2"),
    ("API_POOL_BUFFER", "-3"),
    ("LEASE_SECONDS", "-1"),
    ("LEASE_SECONDS", "nan"),
    ("LEASE_SECONDS", "inf"),
    ("LEASE_SECONDS", "0.1"),
    ("LEASE_SECONDS", "30s"),
    ("HEARTBEAT_SECONDS", "0"),
    ("DEFAULT_MAX_ATTEMPTS", "0"),
    ("RETRY_BASE_SECONDS", "-0.5"),
    ("MAX_BULK_BYTES", "12"),
    ("MAX_QUEUE_DEPTH", "0"),
    ("LOG_FORMAT", "xml"),
    ("LOG_LEVEL", "loud"),
    ("REAP_INTERVAL_SECONDS", "0"),
    ("POLL_INTERVAL_SECONDS", "never"),
    ("SHUTDOWN_GRACE_SECONDS", "-1"),
    ("CLAIM_BATCH_MAX", "-1"),
    ("CLAIM_BATCH_MAX", "10001"),
    ("API_CPUS", "some"),
    ("API_CPUS", "3-1"),
    ("API_CPUS", "-1"),
]


@pytest.mark.parametrize(("name", "value"), BAD, ids=[f"{n}={v}" for n, v in BAD])
def test_bad_value_names_the_variable(name, value) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({name: value}, dotenv=None)
    message = str(refused.value)
    assert message.startswith(f"{name}="), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("lease", "heartbeat", "ok"),
    [("3", "1", True), ("3", "1.01", False), ("30", "10", True), ("30", "11", False),
     ("0.5", "0.1", True), ("1.5", "0.3", True), ("1.5", "0.6", False)],
)
def test_heartbeat_must_be_at_most_a_third_of_the_lease(lease, heartbeat, ok) -> None:
    env = {"LEASE_SECONDS": lease, "HEARTBEAT_SECONDS": heartbeat}
    if ok:
        settings = load_settings(env, dotenv=None)
        assert (settings.lease_seconds, settings.heartbeat_seconds) == (float(lease),
                                                                         float(heartbeat))
    else:
        with pytest.raises(ConfigError) as refused:
            load_settings(env, dotenv=None)
        assert str(refused.value).startswith("HEARTBEAT_SECONDS=")
        assert "LEASE_SECONDS" in str(refused.value)


def test_retry_max_below_base_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"RETRY_BASE_SECONDS": "10", "RETRY_MAX_SECONDS": "5"}, dotenv=None)
    assert str(refused.value).startswith("RETRY_MAX_SECONDS=")


def test_fractions_are_accepted() -> None:
    settings = load_settings(
        {"LEASE_SECONDS": "0.5", "HEARTBEAT_SECONDS": "0.15", "REAP_INTERVAL_SECONDS": "0.25",
         "RETRY_BASE_SECONDS": "0.05", "SHUTDOWN_GRACE_SECONDS": "1.5"},
        dotenv=None)
    assert settings.lease_seconds == 0.5
    assert settings.heartbeat_seconds == 0.15
    assert settings.reap_interval_seconds == 0.25
    assert settings.retry_base_seconds == 0.05
    assert settings.shutdown_grace_seconds == 1.5


def test_defaults_and_pool_formula() -> None:
    settings = load_settings({}, dotenv=None)
    assert settings == Settings()
    assert (settings.num_workers, settings.max_concurrent_jobs, settings.api_pool_buffer) == (
        3, 5, 7)
    assert settings.db_connections == settings.pool_formula == 15
    assert load_settings({"MAX_DB_CONNECTIONS": "6"}, dotenv=None).db_connections == 6
    assert pool_max_size(settings) == 14  # one connection is the LISTEN connection
    assert pool_max_size(settings, server_limit=20) == 10  # capped, room left for others


def test_dotenv_is_read_and_real_environment_wins(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\n"
        "\n"
        "LEASE_SECONDS=12\n"
        "export HEARTBEAT_SECONDS=2\n"
        "NUM_WORKERS='7'\n"
        'LOG_FORMAT="json"\n'
        "MAX_CONCURRENT_JOBS=9\n"
        "not a setting line\n"
    )
    assert read_dotenv(dotenv)["NUM_WORKERS"] == "7"
    settings = load_settings({"NUM_WORKERS": "4", "MAX_CONCURRENT_JOBS": ""}, dotenv=dotenv)
    assert settings.num_workers == 4  # real environment wins
    assert settings.lease_seconds == 12.0 and settings.heartbeat_seconds == 2.0
    assert settings.log_format == "json"
    assert settings.max_concurrent_jobs == 5  # an empty real variable wins too: unset
    assert load_settings({}, dotenv=tmp_path / "missing.env") == Settings()


def test_bad_dotenv_value_names_the_variable(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("LEASE_SECONDS=forever\n")
    with pytest.raises(ConfigError, match=r"^LEASE_SECONDS="):
        load_settings({}, dotenv=dotenv)


def test_load_settings_reads_os_environ(monkeypatch) -> None:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAX_CONCURRENT_JOBS", "11")
    monkeypatch.setenv("LEASE_SECONDS", "0.9")
    monkeypatch.setenv("HEARTBEAT_SECONDS", "0.3")
    settings = load_settings(dotenv=None)
    assert (settings.max_concurrent_jobs, settings.lease_seconds) == (11, 0.9)


def test_describe_hides_the_token() -> None:
    settings = load_settings({"API_TOKEN": "s3cret"}, dotenv=None)
    assert describe(settings)["api_token"] == "***"
    assert "s3cret" not in repr(describe(settings))


def test_connections_carry_their_role() -> None:
    info = conninfo("postgresql://u@localhost:5432/db", "worker")
    assert "application_name=boundq-worker" in info
    assert "connect_timeout=" in info and "keepalives=1" in info


@pytest.mark.parametrize(("name", "value"), [("LEASE_SECONDS", "abc"), ("NUM_WORKERS", "0")])
def test_cli_fails_at_start_with_one_line(tmp_path, name, value) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARIABLES}
    env.update({name: value, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    done = subprocess.run([sys.executable, "-m", "boundq", "worker"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert name in lines[0]


@pytest.mark.parametrize(
    ("env", "batch"),
    [({}, 5),  # the seed's 5 permits: all of them
     ({"MAX_CONCURRENT_JOBS": "50"}, 50),
     ({"MAX_CONCURRENT_JOBS": "500"}, 167),  # a share of 500 over 3 acquirers
     ({"MAX_CONCURRENT_JOBS": "500", "NUM_WORKERS": "4"}, 125),
     ({"MAX_CONCURRENT_JOBS": "500", "NUM_WORKERS": "10"}, 100),  # at least 100
     ({"MAX_CONCURRENT_JOBS": "100000", "NUM_WORKERS": "1"}, 1000),  # capped
     ({"MAX_CONCURRENT_JOBS": "500", "CLAIM_BATCH_MAX": "50"}, 50)],  # set explicitly
)
def test_claim_batch_defaults_to_an_acquirers_share_of_the_permits(env, batch) -> None:
    assert load_settings(env, dotenv=None).claim_batch == batch
