"""Spans read back from what OTEL_TRACES_EXPORTER=console printed, and the traceparent a
job stored, for the tracing tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpanRecord:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_id: str | None
    kind: str
    status: str  # UNSET, OK, ERROR
    attributes: dict[str, Any]
    service: str

    @property
    def job_id(self) -> int | None:
        value = self.attributes.get("messaging.message.id")
        return None if value is None else int(value)


def parse_console(text: str) -> list[SpanRecord]:
    """Every span in the console exporter's output: JSON objects one after another (other
    JSON, such as `boundq enqueue`'s answer line, is skipped)."""
    decoder = json.JSONDecoder()
    spans: list[SpanRecord] = []
    at = 0
    while True:
        start = text.find("{", at)
        if start < 0:
            return spans
        value, at = decoder.raw_decode(text, start)
        if isinstance(value, dict) and "context" in value and "name" in value:
            spans.append(record(value))


def record(value: dict[str, Any]) -> SpanRecord:
    parent = value.get("parent_id")
    return SpanRecord(
        name=value["name"], trace_id=_hex(value["context"]["trace_id"]),
        span_id=_hex(value["context"]["span_id"]), parent_id=_hex(parent) if parent else None,
        kind=value["kind"].removeprefix("SpanKind."),
        status=value["status"]["status_code"], attributes=dict(value["attributes"]),
        service=value["resource"]["attributes"].get("service.name", ""))


def from_sdk(span: Any) -> SpanRecord:
    """The same record from an SDK ReadableSpan (an in-memory exporter's)."""
    return SpanRecord(
        name=span.name, trace_id=f"{span.context.trace_id:032x}",
        span_id=f"{span.context.span_id:016x}",
        parent_id=f"{span.parent.span_id:016x}" if span.parent else None,
        kind=span.kind.name, status=span.status.status_code.name,
        attributes=dict(span.attributes or {}),
        service=str(span.resource.attributes.get("service.name", "")))


def _hex(value: str) -> str:
    return value.removeprefix("0x")


def split_traceparent(value: str) -> tuple[str, str]:
    """(trace id, span id) of a W3C traceparent `00-<trace>-<span>-<flags>`."""
    version, trace_id, span_id, _flags = value.split("-")
    assert version == "00" and len(trace_id) == 32 and len(span_id) == 16, value
    return trace_id, span_id
