"""The spans of a job's life: create, claim, run, complete (imported only with tracing on).

Every job's spans belong to one trace: the producer's `boundq.create` span is stored with
the job as a W3C traceparent; each attempt's `boundq.claim`, `boundq.run` and
`boundq.complete` spans are its children. A job created without a stored context (tracing
was off at the producer) gets a trace of its own per attempt, rooted at its claim span.

A claim or complete span per job, not one per statement: a statement claims jobs of many
traces, and a span belongs to one. Every job of a statement gets the statement's start
and end as its span's times (so the spans of one batch line up), and the batch's size.

Attribute names follow OpenTelemetry's messaging conventions where they fit (a job is a
message, its queue the destination): messaging.system, messaging.operation.type
(create / receive / process / settle), messaging.operation.name, messaging.destination.name,
messaging.message.id, messaging.batch.message_count, messaging.client.id, error.type.
The rest are boundq's own: boundq.job.kind, boundq.job.attempt, boundq.job.outcome,
boundq.job.status, boundq.write.fenced, boundq.create.via, boundq.reconciled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from boundq.core.states import AttemptOutcome
from boundq.core.tracing import Creation, Execute

if TYPE_CHECKING:
    from boundq.core.claim import Claim
    from boundq.core.ledger import Pending
    from boundq.core.queue import ClaimedRow, Outcome

SYSTEM = "boundq"
MAX_STATUS_TEXT = 500

# Messaging semantic conventions.
MESSAGING_SYSTEM = "messaging.system"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
BATCH_COUNT = "messaging.batch.message_count"
CLIENT_ID = "messaging.client.id"
ERROR_TYPE = "error.type"
# boundq's own.
JOB_KIND = "boundq.job.kind"
JOB_ATTEMPT = "boundq.job.attempt"
JOB_OUTCOME = "boundq.job.outcome"
JOB_STATUS = "boundq.job.status"
WRITE_FENCED = "boundq.write.fenced"
CREATE_VIA = "boundq.create.via"
RECONCILED = "boundq.reconciled"

# The column holds W3C traceparent whatever OTEL_PROPAGATORS says (that one governs HTTP
# headers), so every process reads what every other wrote.
_W3C = TraceContextTextMapPropagator()
_ROOT = Context()  # an explicit empty parent: a root span, whatever is current

Attributes = dict[str, AttributeValue]
Key = tuple[str, int, int]  # (owner, job id, attempt)


def traceparent_of(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span, _ROOT))
    return carrier.get("traceparent")


def stored_context(trace_parent: str | None) -> Context | None:
    """The context a job stored, or None when it stored none (or nothing valid)."""
    if not trace_parent:
        return None
    found = _W3C.extract({"traceparent": trace_parent}, context=_ROOT)
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def job_attributes(owner: str, job_id: int, attempt: int, kind: str, queue: str,
                   operation: str, name: str) -> Attributes:
    return {MESSAGING_SYSTEM: SYSTEM, OPERATION_TYPE: operation, OPERATION_NAME: name,
            DESTINATION: queue, MESSAGE_ID: str(job_id), CLIENT_ID: owner, JOB_KIND: kind,
            JOB_ATTEMPT: attempt}


class JobSpans:
    """The spans of this process. Between its claim and the write of its outcome, each
    attempt's parent context waits here, by (owner, id, attempt): the worker's hot path
    carries nothing for tracing."""

    def __init__(self, tracer_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("boundq", tracer_provider=tracer_provider)
        self._parents: dict[Key, Context] = {}

    @property
    def held(self) -> int:
        """Attempts claimed whose outcome is not written yet (tests: nothing leaks)."""
        return len(self._parents)

    # --- producers ---------------------------------------------------------------------
    def creation(self, headers: Mapping[str, str] | None, count: int, via: str,
                 queue: str | None) -> Creation:
        return SpanCreation(self.tracer, headers, count, via, queue)

    # --- claim ---------------------------------------------------------------------------
    def claimed(self, owner: str, start: int, end: int, rows: Sequence[ClaimedRow],
                reconciled: bool = False) -> None:
        for row in rows:
            stored = stored_context(row.trace_parent)
            attributes = job_attributes(owner, row.id, row.attempt, row.kind, row.queue,
                                        "receive", "claim")
            attributes[BATCH_COUNT] = len(rows)
            if reconciled:
                attributes[RECONCILED] = True
            span = self.tracer.start_span("boundq.claim", context=stored or _ROOT,
                                          kind=SpanKind.CLIENT, attributes=attributes,
                                          start_time=start)
            span.end(end)
            # Without a stored context, the attempt's trace is rooted at its claim span.
            self._parents[(owner, row.id, row.attempt)] = (
                stored if stored is not None else trace.set_span_in_context(span, _ROOT))

    # --- run -----------------------------------------------------------------------------
    def wrap_run(self, execute: Execute) -> Execute:
        async def run(claim: Claim) -> Outcome | None:
            key = (claim.owner, claim.id, claim.attempt)
            span = self.tracer.start_span(
                "boundq.run", context=self._parents.get(key, _ROOT), kind=SpanKind.CONSUMER,
                attributes=job_attributes(claim.owner, claim.id, claim.attempt, claim.kind,
                                          claim.queue, "process", "run"))
            try:
                with trace.use_span(span, record_exception=False,
                                    set_status_on_exception=False):
                    outcome = await execute(claim)
            except asyncio.CancelledError:  # stopped at shutdown: handed back, not failed
                self._parents.pop(key, None)
                span.set_attribute(JOB_OUTCOME, "cancelled")
                span.end()
                raise
            except BaseException as exc:  # a bug below the handler's own error handling
                self._parents.pop(key, None)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.end()
                raise
            if outcome is None:  # the lease was lost: the result is dropped
                self._parents.pop(key, None)
                span.set_attribute(JOB_OUTCOME, "lost")
                span.set_attribute(ERROR_TYPE, "lost")
                span.set_status(Status(StatusCode.ERROR, "lease lost; the result is dropped"))
            else:
                mark_outcome(span, outcome)
            span.end()
            return outcome

        return run

    # --- complete ------------------------------------------------------------------------
    def written(self, owner: str, start: int, end: int, items: Sequence[Pending],
                committed: Collection[int], statuses: Mapping[int, str] | None = None,
                reconciled: bool = False) -> None:
        """A complete span per outcome a statement wrote (or found fenced)."""
        for claim, outcome, _ in items:
            attributes = job_attributes(owner, claim.id, claim.attempt, claim.kind,
                                        claim.queue, "settle", "complete")
            attributes[JOB_OUTCOME] = outcome.outcome.value
            attributes[BATCH_COUNT] = len(items)
            fenced = claim.id not in committed
            attributes[WRITE_FENCED] = fenced
            if not fenced:
                attributes[JOB_STATUS] = "success" if statuses is None else statuses[claim.id]
            if reconciled:
                attributes[RECONCILED] = True
            parent = self._parents.pop((owner, claim.id, claim.attempt), _ROOT)
            span = self.tracer.start_span("boundq.complete", context=parent,
                                          kind=SpanKind.CLIENT, attributes=attributes,
                                          start_time=start)
            span.end(end)

    def reconciled(self, owner: str, at: int, unheld: Sequence[Pending], settled: Collection[int],
                   adopted: Sequence[ClaimedRow]) -> None:
        self.written(owner, at, at, unheld, settled, reconciled=True)
        self.claimed(owner, at, at, adopted, reconciled=True)


def mark_outcome(span: Span, outcome: Outcome) -> None:
    span.set_attribute(JOB_OUTCOME, outcome.outcome.value)
    if outcome.outcome is not AttemptOutcome.SUCCESS:
        span.set_attribute(ERROR_TYPE, outcome.outcome.value)
        span.set_status(Status(StatusCode.ERROR, (outcome.error or "")[:MAX_STATUS_TEXT]))


class SpanCreation(Creation):
    """A `boundq.create` span, current while the insert runs (so the API's query spans
    nest under it); its traceparent is what the jobs store."""

    def __init__(self, tracer: trace.Tracer, headers: Mapping[str, str] | None, count: int,
                 via: str, queue: str | None) -> None:
        self.tracer = tracer
        self.headers = headers
        self.attributes: Attributes = {MESSAGING_SYSTEM: SYSTEM, OPERATION_TYPE: "create",
                                       OPERATION_NAME: "create", CREATE_VIA: via}
        if count != 1:
            self.attributes[BATCH_COUNT] = count
        if queue is not None:
            self.attributes[DESTINATION] = queue
        self.span: Span | None = None
        self._token: Token[Context] | None = None

    def __enter__(self) -> Creation:
        # An HTTP request's traceparent (per OTEL_PROPAGATORS) wins over the current span.
        parent = None if self.headers is None else propagate.extract(self.headers)
        self.span = self.tracer.start_span("boundq.create", context=parent,
                                           kind=SpanKind.PRODUCER, attributes=self.attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        self.trace_parent = traceparent_of(self.span)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self.span is not None and self._token is not None
        otel_context.detach(self._token)
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.span.end()

    def created(self, job_id: int, new: bool = True) -> None:
        if self.span is not None:
            self.span.set_attribute(MESSAGE_ID, str(job_id))
            if not new:
                self.span.set_attribute("boundq.create.deduplicated", True)
