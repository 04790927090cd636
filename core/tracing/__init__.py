"""Tracing with OpenTelemetry: one job is one trace, off by default and free when off.

Turned on by the standard variables: OTEL_TRACES_EXPORTER naming an exporter (`console`,
`otlp`, ...; unset or `none` is off, unlike the specification's default, otlp) and OTEL_SDK_DISABLED
not `true`. The SDK then configures itself from OTEL_* (service name, resource, sampler,
exporter endpoints, batch processor): see core/tracing/sdk.py and docs/tracing.md.

When it is off nothing imports opentelemetry, and the hot path does no work per job:
the claim loop reads `ENABLED` once per statement, and the worker chose its job runner
once, at construction (`wrap_run`). When it is on:

- a producer (the API, the Client, `boundq enqueue`) opens a `boundq.create` span around
  the insert and stores its W3C traceparent with the job (`jobs.trace_parent`);
- the claim returns it, and the worker starts the job's `boundq.claim`, `boundq.run` and
  `boundq.complete` spans as its children, so they share the create span's trace id.

This module holds the switch and the hooks the core and the server call; the spans are
built in core/tracing/spans.py, imported only once tracing is on.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from boundq.core.errors import BoundqError

if TYPE_CHECKING:
    from boundq.core.claim import Claim
    from boundq.core.ledger import Pending
    from boundq.core.queue import ClaimedRow, Outcome
    from boundq.core.tracing.spans import JobSpans
    from boundq.core.validation import JobSpec

log = logging.getLogger("boundq.tracing")

EXTRA = "boundq[otel]"

# Whether this process traces its jobs. Set once, at start (configure() or enable());
# the claim loop reads it once per statement, never per job.
ENABLED = False
_spans: JobSpans | None = None
# For producers in a process that did not turn tracing on but uses OpenTelemetry itself
# (an application calling Client.enqueue inside its own spans): made on first use.
_app_spans: JobSpans | None = None

# The clock of the worker's span times (wall clock in ns, what OpenTelemetry records).
now_ns = time.time_ns

Execute = Callable[["Claim"], Awaitable["Outcome | None"]]


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces. Imports nothing."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = environ.get("OTEL_TRACES_EXPORTER", "").split(",")
    return any(name.strip() and name.strip().lower() != "none" for name in names)


def require(environ: Mapping[str, str] = os.environ) -> bool:
    """At a command's start: whether tracing is asked for. Raises BoundqError (one line,
    naming the extra) when it is but the OpenTelemetry SDK is not installed. Reads
    package metadata only; imports nothing."""
    if not requested(environ):
        return False
    try:
        importlib.metadata.version("opentelemetry-sdk")
    except importlib.metadata.PackageNotFoundError:
        raise BoundqError(
            f"tracing is on (OTEL_TRACES_EXPORTER={environ.get('OTEL_TRACES_EXPORTER')}) but "
            f"the OpenTelemetry SDK is not installed: pip install '{EXTRA}', or unset "
            "OTEL_TRACES_EXPORTER") from None
    return True


def configure(service: str, *, instrument_psycopg: bool = False,
              environ: Mapping[str, str] = os.environ) -> bool:
    """At a process's start: when OTEL_* ask for traces, set the SDK up from them (the
    default service.name is `service`) and turn tracing on. `instrument_psycopg`: trace
    the queries of this process's connections made from now on, inside a traced span
    (the API). Returns whether tracing is on."""
    if not require(environ):
        return False
    from boundq.core.tracing import sdk

    provider = sdk.configure_from_env(service)
    if instrument_psycopg:
        sdk.instrument_psycopg(provider)
    enable(provider)
    return True


def enable(tracer_provider: Any = None) -> JobSpans:
    """Trace with `tracer_provider` (default: the global one, which an application may
    have set up itself). A Worker decides at construction: enable first."""
    global ENABLED, _spans
    from boundq.core.tracing.spans import JobSpans

    _spans = JobSpans(tracer_provider)
    ENABLED = True
    return _spans


def disable() -> None:
    """Tracing off again (tests); Workers made while it was on keep their run spans."""
    global ENABLED, _spans, _app_spans
    ENABLED = False
    _spans = None
    _app_spans = None


# --- worker hooks ----------------------------------------------------------------------
def wrap_run(execute: Execute) -> Execute:
    """The worker's job runner: `execute` itself when tracing is off, else `execute` inside
    a `boundq.run` span (the handler's own spans nest under it)."""
    return execute if _spans is None else _spans.wrap_run(execute)


def cycled(owner: str, started_ns: int, successes: Sequence[Pending], completed: Collection[int],
           claimed: Sequence[ClaimedRow]) -> None:
    """After a job_complete_and_claim statement that began at started_ns: a complete span
    per written success (fenced ones marked) and a claim span per claimed job."""
    if _spans is not None:
        end = now_ns()
        with _never_raises():
            _spans.written(owner, started_ns, end, successes, completed)
            _spans.claimed(owner, started_ns, end, claimed)


def claimed(owner: str, started_ns: int, rows: Sequence[ClaimedRow]) -> None:
    """After a job_claim_limited statement (a queue or kind with limits): a claim span per
    claimed job."""
    if _spans is not None:
        end = now_ns()
        with _never_raises():
            _spans.claimed(owner, started_ns, end, rows)


def failures_written(owner: str, started_ns: int, failures: Sequence[Pending],
                     statuses: Mapping[int, str]) -> None:
    """After job_fail_batch: a complete span per failed attempt written or fenced."""
    if _spans is not None:
        with _never_raises():
            _spans.written(owner, started_ns, now_ns(), failures, statuses.keys(), statuses)


def reconciled(owner: str, unheld: Sequence[Pending], settled: Collection[int],
               adopted: Sequence[ClaimedRow]) -> None:
    """After a reconciliation: complete spans for outcomes a lost statement settled (or
    that were fenced), claim spans for the rows it claimed and this process adopts."""
    if _spans is not None:
        with _never_raises():
            _spans.reconciled(owner, now_ns(), unheld, settled, adopted)


@contextlib.contextmanager
def _never_raises() -> Iterator[None]:
    """The claim loop calls these between a commit and its bookkeeping: a fault in
    tracing is logged and costs spans, never the loop's accounting."""
    try:
        yield
    except Exception:
        log.exception("tracing: spans dropped")


# --- producer hooks --------------------------------------------------------------------
class Creation:
    """A producer's create scope: `trace_parent` is what its jobs store (None: not
    traced). This base class is the scope of an untraced process and does nothing."""

    trace_parent: str | None = None

    def __enter__(self) -> Creation:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def stamp(self, specs: Iterable[JobSpec]) -> None:
        """Every job of the batch carries this scope's context."""
        if self.trace_parent is not None:
            for spec in specs:
                spec.trace_parent = self.trace_parent

    def stamping(self, validate: Callable[[Any], JobSpec]) -> Callable[[Any], JobSpec]:
        """`validate` whose specs carry this scope's context (itself when untraced)."""
        trace_parent = self.trace_parent
        if trace_parent is None:
            return validate

        def stamped(raw: Any) -> JobSpec:
            spec = validate(raw)
            spec.trace_parent = trace_parent
            return spec

        return stamped

    def created(self, job_id: int, new: bool = True) -> None:
        """The job a single create made (or found by its dedupe_key: new=False)."""


_UNTRACED = Creation()


def creating(headers: Mapping[str, str] | None = None, *, count: int = 1, via: str = "client",
             queue: str | None = None) -> Creation:
    """A `boundq.create` span around an insert of `count` jobs, as a context manager whose
    `trace_parent` the jobs store. Its parent: the context in `headers` (an HTTP request's
    traceparent) or else the current span. Untraced (a shared do-nothing scope) when this
    process neither turned tracing on nor imported OpenTelemetry itself."""
    spans = _spans
    if spans is None:
        if "opentelemetry.trace" not in sys.modules:
            return _UNTRACED
        spans = _application_spans()
    return spans.creation(headers, count, via, queue)


def _application_spans() -> JobSpans:
    global _app_spans
    if _app_spans is None:
        from boundq.core.tracing.spans import JobSpans

        _app_spans = JobSpans(None)
    return _app_spans
