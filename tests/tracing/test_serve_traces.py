"""One job is one trace across processes: `boundq serve` (an API process and a worker
process) with OTEL_TRACES_EXPORTER=console, jobs created through the HTTP API (single and
bulk), the Client and `boundq enqueue`; the spans are read back from what the processes
printed. With tracing off, the same run prints no span and stores no trace context."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from boundq.core import tracing
from boundq.core.client import Client
from boundq.core.pgembed import free_port
from tests.conftest import fast_settings
from tests.tracing.console import SpanRecord, from_sdk, parse_console, split_traceparent

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
JOB_SPANS = ("boundq.claim", "boundq.run", "boundq.complete")


def base_env(db_url: str, traced: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({"DATABASE_URL": db_url, "LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"})
    if traced:
        # Unbuffered: each span is one write, so the API's and the worker's spans never
        # interleave in the file they share.
        env.update({"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"})
    return env


@dataclass
class Served:
    base: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(params=[True, False], ids=["tracing-on", "tracing-off"])
def traced(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def served(db_url: str, traced: bool, out_dir: Path) -> Iterator[Served]:
    port = free_port()
    env = {**base_env(db_url, traced), "HTTP_PORT": str(port), "WORKER_PROCESSES": "1",
           "POLL_INTERVAL_SECONDS": "0.1", "SHUTDOWN_GRACE_SECONDS": "2",
           "RETRY_BASE_SECONDS": "0.05", "RETRY_MAX_SECONDS": "0.1",
           "API_POOL_BUFFER": "3", "MAX_DB_CONNECTIONS": "10"}
    out, err = out_dir / "serve.out", out_dir / "serve.err"
    with open(out, "ab") as stdout, open(err, "ab") as stderr:
        # A group of its own: whatever happens to the test, no API or worker process of
        # it outlives the test.
        proc = subprocess.Popen([sys.executable, "-m", "boundq", "serve"], env=env,
                                stdout=stdout, stderr=stderr, start_new_session=True)
    served = Served(f"http://127.0.0.1:{port}", proc, out, err)
    try:
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def wait_ready(served: Served) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as http:
        while True:
            assert served.proc.poll() is None, served.err.read_text()
            try:
                if (await http.get(f"{served.base}/readyz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "boundq serve did not become ready"
            await asyncio.sleep(0.1)


def stop(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(60) == 0, served.err.read_text()


def enqueue_cli(db_url: str, traced: bool) -> subprocess.Popen[str]:
    """`boundq enqueue` of two jobs, in its own process."""
    return subprocess.Popen([sys.executable, "-m", "boundq", "enqueue", "--name", "cli",
                             "--count", "2"], env=base_env(db_url, traced),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def create_jobs(served: Served, db_url: str) -> dict[str, list[int]]:
    """Jobs by how they were made: api (one with a caller's traceparent header), bulk
    (one that fails its first attempt), client (one, then two at once)."""
    made: dict[str, list[int]] = {}
    async with httpx.AsyncClient(base_url=served.base) as http:
        with_header = await post(
            http, "/jobs", json={"name": "single"},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
        failing = await post(http, "/jobs", json={"name": "single-fails", "kind": "fail",
                                                  "payload": {"times": 1}})
        bulk = await post(http, "/jobs/bulk", json=[
            {"name": "bulk"}, {"name": "bulk-fails", "kind": "fail", "payload": {"times": 1}}])
    assert with_header.status_code == failing.status_code == bulk.status_code == 201
    made["api"] = [with_header.json()["id"], failing.json()["id"]]
    made["bulk"] = bulk.json()["ids"]
    client = Client(fast_settings())
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        one = await client.enqueue(conn, "client")
        many = await client.enqueue_many(conn, [{"name": "client-a"}, {"name": "client-b"}])
    made["client"] = [one["id"], *many]
    return made


async def post(http: httpx.AsyncClient, path: str, **kwargs: Any) -> httpx.Response:
    """A create, retried as a client would while the door sheds it (429/503: a busy
    machine makes the API's event loop run late)."""
    deadline = time.monotonic() + 30
    while True:
        response = await http.post(path, **kwargs)
        if response.status_code not in (429, 503) or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.2)


async def jobs_of(db_url: str) -> dict[int, dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT id, name, status, attempts, trace_parent FROM jobs")
        return {row[0]: {"name": row[1], "status": row[2], "attempts": row[3],
                         "trace_parent": row[4]} for row in await cur.fetchall()}


async def wait_finished(db_url: str, count: int) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        jobs = await jobs_of(db_url)
        if len(jobs) == count and all(j["status"] == "success" for j in jobs.values()):
            return jobs
        assert time.monotonic() < deadline, f"jobs did not all succeed: {jobs}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_one_job_is_one_trace_across_processes(served: Served, db_url: str, traced: bool
                                                     ) -> None:
    cli = enqueue_cli(db_url, traced)  # meanwhile: both start up at once
    client_spans = InMemorySpanExporter()
    if traced:  # this process is the application that calls the Client
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(client_spans))
        tracing.enable(provider)
    try:
        await wait_ready(served)
        made = await create_jobs(served, db_url)
    finally:
        tracing.disable()
    cli_out, cli_err = cli.communicate(timeout=120)
    assert cli.returncode == 0, cli_err
    jobs = await wait_finished(db_url, 9)
    made["cli"] = sorted(set(jobs) - {i for ids in made.values() for i in ids})
    stop(served)
    served_spans = parse_console(served.out.read_text())
    cli_spans = parse_console(cli_out)

    if not traced:
        assert served_spans == [] and cli_spans == [] and client_spans.get_finished_spans() == ()
        assert [j["trace_parent"] for j in jobs.values()] == [None] * len(jobs)
        return

    spans = served_spans + cli_spans + [from_sdk(s) for s in client_spans.get_finished_spans()]
    by_id = {s.span_id: s for s in spans}
    job_traces: set[str] = set()
    for via, ids in made.items():
        for job_id in ids:
            job = jobs[job_id]
            trace_id, create_id = split_traceparent(job["trace_parent"])
            job_traces.add(trace_id)
            create = by_id[create_id]
            assert (create.name, create.trace_id, create.kind) == (
                "boundq.create", trace_id, "PRODUCER")
            assert create.attributes["boundq.create.via"] == via
            own = [s for s in spans if s.job_id == job_id and s.name in JOB_SPANS]
            # Each attempt: one claim, one run, one complete; all children of the create span.
            assert sorted(s.name for s in own) == sorted(JOB_SPANS * job["attempts"]), own
            assert {(s.trace_id, s.parent_id) for s in own} == {(trace_id, create_id)}
            assert {s.service for s in own} == {"boundq-worker"}
            check_runs(job["name"], [s for s in own if s.name == "boundq.run"])
    # The caller's trace context (the HTTP traceparent header) is the job's parent.
    first = by_id[split_traceparent(jobs[made["api"][0]]["trace_parent"])[1]]
    assert (first.trace_id, first.parent_id) == (CALLER_TRACE, CALLER_SPAN)
    # The API's queries (psycopg instrumentation) nest under its create spans, and its
    # own background queries print nothing: every span printed belongs to a job's trace.
    inserts = [s for s in served_spans if s.name == "job_insert_batch"]
    assert inserts and all(by_id[s.parent_id].name == "boundq.create" for s in inserts
                           if s.parent_id)
    assert {s.trace_id for s in spans} == job_traces


def check_runs(name: str, runs: list[SpanRecord]) -> None:
    """A run span names its job and outcome; a failed attempt's has error status."""
    by_attempt = {s.attributes["boundq.job.attempt"]: s for s in runs}
    outcomes = {a: (s.attributes["boundq.job.outcome"], s.status) for a, s in by_attempt.items()}
    if name.endswith("fails"):
        assert outcomes == {1: ("error", "ERROR"), 2: ("success", "UNSET")}
    else:
        assert outcomes == {1: ("success", "UNSET")}
    for span in runs:
        assert span.kind == "CONSUMER"
        assert span.attributes["messaging.operation.type"] == "process"
        assert span.attributes["boundq.job.kind"] in ("noop", "fail")
        assert span.attributes["messaging.destination.name"] == "default"
