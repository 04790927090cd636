"""The OpenTelemetry SDK, set up from the standard OTEL_* variables (imported only when
they ask for traces; see core/tracing/__init__.py).

The SDK configures itself: the configurator below is the one `opentelemetry-instrument`
runs, so OTEL_TRACES_EXPORTER (console, otlp, ... by their entry points), OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_EXPORTER_OTLP_* and OTEL_BSP_*
mean here what they mean everywhere. boundq adds one default: service.name is the
process's role (boundq-api, boundq-worker, boundq-enqueue) unless those variables set it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import Attributes

from boundq.core.errors import BoundqError
from boundq.core.queries import Q

log = logging.getLogger("boundq.tracing")


class _Configurator(_OTelSDKConfigurator):
    """The SDK's environment configuration; distros subclass it (the SDK's advice)."""


def configure_from_env(service: str) -> trace.TracerProvider:
    """Set the global tracer provider up from OTEL_*; returns it. Raises BoundqError (one
    line) when OTEL_TRACES_EXPORTER names an exporter that is not installed."""
    attributes: dict[str, Any] = {}
    detected = str(Resource.create().attributes.get(SERVICE_NAME, ""))
    if detected.startswith("unknown_service"):  # neither OTEL_SERVICE_NAME nor the resource
        attributes[SERVICE_NAME] = service
    try:
        _Configurator().configure(resource_attributes=attributes)  # type: ignore[no-untyped-call]
    except RuntimeError as exc:  # "Requested component 'otlp_proto_grpc' not found ..."
        names = os.environ.get("OTEL_TRACES_EXPORTER", "")
        raise BoundqError(f"OTEL_TRACES_EXPORTER={names}: {exc}; install that exporter "
                          "(OTLP: pip install opentelemetry-exporter-otlp)") from None
    return trace.get_tracer_provider()


def instrument_psycopg(provider: trace.TracerProvider) -> bool:
    """Trace the queries of psycopg connections made from now on, but only inside a span
    (a create): a query with nothing to belong to (the API's depth probe, a GET) would
    otherwise be a trace of its own, several a second."""
    try:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    except ImportError:
        log.warning("tracing: opentelemetry-instrumentation-psycopg is not installed; the "
                    "API's queries get no spans (pip install 'boundq[otel]')")
        return False
    PsycopgInstrumentor().instrument(tracer_provider=ChildSpansOnly(provider))
    return True


class ChildSpansOnly(trace.TracerProvider):
    """Tracers that start a span only where a span is current (else a non-recording one)."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider

    def get_tracer(self, instrumenting_module_name: str,
                   instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Attributes = None) -> trace.Tracer:
        return _ChildOnlyTracer(self.provider.get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes))


class _ChildOnlyTracer(trace.Tracer):
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def start_span(self, name: str, context: Context | None = None,
                   kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None,
                   links: Any = None, start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True
                   ) -> Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self.tracer.start_span(name, context, kind, attributes, links, start_time,
                                      record_exception, set_status_on_exception)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
            self, name: str, context: Context | None = None,
            kind: SpanKind = SpanKind.INTERNAL, attributes: Attributes = None,
            links: list[Link] | None = None, start_time: int | None = None,
            record_exception: bool = True, set_status_on_exception: bool = True,
            end_on_exit: bool = True) -> Iterator[Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time,
                               record_exception, set_status_on_exception)
        try:
            with trace.use_span(span, record_exception=record_exception,
                                set_status_on_exception=set_status_on_exception) as current:
                yield current
        finally:
            name_by_statement(span)  # the instrumentation has set db.statement by now
            if end_on_exit:
                span.end()


def name_by_statement(span: Span) -> None:
    """A query span named after its SQL block (`job_insert_batch`), not after the first
    word of its text, which for a block is its leading comment (`--`)."""
    attributes = getattr(span, "attributes", None)
    if not span.is_recording() or not attributes:
        return
    text = attributes.get("db.statement") or attributes.get("db.query.text")
    if isinstance(text, str):
        name = _block_names().get(text)
        if name is not None:
            span.update_name(name)


@functools.cache
def _block_names() -> dict[str, str]:
    return {Q.text(name): name for name in Q.names()}
