"""Tracing is off unless OTEL_* ask for it; off, nothing imports OpenTelemetry; asked for
without the extra (or with an exporter that is not installed), a command fails at start
with one line that says what to install."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from boundq.core import tracing

# A process in which the OpenTelemetry SDK looks uninstalled (its metadata is not found).
_NO_SDK = """
import importlib.metadata as metadata
import sys
real = metadata.version
def version(name):
    if name == "opentelemetry-sdk":
        raise metadata.PackageNotFoundError(name)
    return real(name)
metadata.version = version
from boundq.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": " "}, False),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none,otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "false"}, True),
    ({"OTEL_SERVICE_NAME": "shop", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
     False),
])
def test_requested_by_the_otel_variables(environ: dict[str, str], on: bool) -> None:
    assert tracing.requested(environ) is on


def _env(**otel: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    # Fails before it would connect: the database is never reached.
    env.update({"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", **otel})
    return env


def test_off_imports_no_opentelemetry() -> None:
    """A worker, the API and the Client, tracing off: OpenTelemetry is never imported and
    the worker's job runner is the plain one."""
    code = """
import sys
from boundq.core import tracing
from boundq.core.client import Client
from boundq.core.worker import Worker
from boundq.core.config import load_settings
import boundq.server.app
assert tracing.configure("boundq-worker") is False
worker = Worker(load_settings(dotenv=None), "postgresql://nobody@127.0.0.1:1/none")
assert worker._run_one == worker._execute
with tracing.creating(count=3) as trace:
    assert trace.trace_parent is None
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["worker"], ["worker", "--processes", "2"], ["serve"],
                                     ["enqueue"]])
def test_missing_extra_fails_at_start_with_one_line(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-c", _NO_SDK, *command],
                          env=_env(OTEL_TRACES_EXPORTER="console"), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'boundq[otel]'" in lines[0], done.stderr


def test_exporter_not_installed_fails_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "boundq", "enqueue"],
                          env=_env(OTEL_TRACES_EXPORTER="nosuchexporter"), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuchexporter" in lines[0], done.stderr
