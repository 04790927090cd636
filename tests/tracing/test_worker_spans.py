"""The worker's spans, in-process with an in-memory exporter: a fenced completion is
marked as such, a job created untraced gets a trace of its own rooted at its claim, jobs
of a limited queue (claimed by their own statement) stay in their create span's trace,
and nothing is left behind once the outcomes are written."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from boundq.core import flow, queue, tracing
from boundq.core.client import Client
from boundq.core.handlers import JobContext, Registry, register_builtins
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import scalar, wait_until
from tests.tracing.console import SpanRecord, from_sdk, split_traceparent


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    yield exported
    tracing.disable()


async def test_fenced_write_is_marked_and_untraced_jobs_get_a_trace(
        db_url: str, conn: psycopg.AsyncConnection, exporter: InMemorySpanExporter) -> None:
    registry = Registry()
    register_builtins(registry)

    async def stolen(job: JobContext) -> None:
        """Its first attempt is reaped while it runs: that attempt's completion is fenced."""
        if job.attempt == 1:
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as other:
                await other.execute("UPDATE jobs SET lease_expires_at = now() - interval "
                                    "'1 millisecond' WHERE id = %s", (job.id,))
                assert await queue.reap_expired(other) == {job.id: "new"}

    registry.register("stolen", stolen)
    # Leases and heartbeats long enough that only the handler takes the lease away.
    settings = fast_settings(lease_seconds=30, heartbeat_seconds=5)
    client = Client(settings, registry)
    untraced = (await client.enqueue(conn, "untraced"))["id"]
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = tracing.enable(provider)
    stolen_job = await client.enqueue(conn, "stolen", kind="stolen")

    worker = Worker(settings, db_url, registry)
    await worker.start()
    try:
        await wait_until(lambda: scalar(conn, "SELECT count(*) = 2 FROM jobs WHERE status = "
                                              "'success'"), 30, what="both jobs to succeed")
    finally:
        await worker.stop()
    assert spans.held == 0  # every claimed attempt's context went with its written outcome

    records = [from_sdk(s) for s in exporter.get_finished_spans()]
    trace_id, create_id = split_traceparent(stolen_job["trace_parent"])
    completes = sorted((s for s in records if s.job_id == stolen_job["id"]
                        and s.name == "boundq.complete"),
                       key=lambda s: s.attributes["boundq.job.attempt"])
    assert [(s.attributes["boundq.write.fenced"], s.attributes.get("boundq.job.status"))
            for s in completes] == [(True, None), (False, "success")]
    assert {(s.trace_id, s.parent_id) for s in completes} == {(trace_id, create_id)}

    # Created while tracing was off: nothing stored; the worker's spans of that attempt
    # still make one trace, rooted at the claim.
    assert await scalar(conn, "SELECT trace_parent FROM jobs WHERE id = %s", (untraced,)) is None
    own = {s.name: s for s in records if s.job_id == untraced}
    assert sorted(own) == ["boundq.claim", "boundq.complete", "boundq.run"]
    claim = own["boundq.claim"]
    assert claim.parent_id is None
    assert all(_child_of(own[name], claim) for name in ("boundq.run", "boundq.complete"))


def _child_of(span: SpanRecord, parent: SpanRecord) -> bool:
    return (span.trace_id, span.parent_id) == (parent.trace_id, parent.span_id)


async def test_limited_claims_continue_the_jobs_trace(
        db_url: str, conn: psycopg.AsyncConnection, exporter: InMemorySpanExporter) -> None:
    """Jobs of a queue with limits are claimed by boundq_claim_limited, not the cycle's
    statement: their claim, run and complete spans are children of the create span all
    the same (the function returns the stored context)."""
    await flow.put_queue(conn, "mail", flow.parse_settings({"concurrency": 1}, weighted=True))
    settings = fast_settings()
    client = Client(settings)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = tracing.enable(provider)
    jobs = [await client.enqueue(conn, f"limited-{i}", queue="mail") for i in range(3)]
    assert all(job["trace_parent"] for job in jobs)

    worker = Worker(settings, db_url)
    await worker.start()
    try:
        await wait_until(lambda: scalar(conn, "SELECT count(*) = 3 FROM jobs WHERE status = "
                                              "'success'"), 30, what="the limited jobs")
    finally:
        await worker.stop()
    assert spans.held == 0

    records = [from_sdk(s) for s in exporter.get_finished_spans()]
    for job in jobs:
        trace_id, create_id = split_traceparent(job["trace_parent"])
        own = {s.name: s for s in records if s.job_id == job["id"]
               and s.name != "boundq.create"}
        assert sorted(own) == ["boundq.claim", "boundq.complete", "boundq.run"]
        assert {(s.trace_id, s.parent_id) for s in own.values()} == {(trace_id, create_id)}
        assert own["boundq.claim"].attributes["messaging.destination.name"] == "mail"
