"""The API's own counters, the middleware that fills them, and the /metrics text.

/metrics = the core's counters (core.metrics.render_prometheus: the worker of this
process) + the API pool's get_stats() + the counters below, in the Prometheus text format.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boundq.core.metrics import Histogram, render_prometheus

if TYPE_CHECKING:
    from boundq.server.state import ApiState

BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)


@dataclass
class ApiMetrics:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    jobs_created: int = 0
    pool_busy: int = 0  # 503: no connection within the wait bound
    db_unavailable: int = 0  # 503: fast-failed while the database is down
    queue_full: int = 0  # 429: MAX_QUEUE_DEPTH reached
    group_batches: int = 0
    group_batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))


class MetricsMiddleware:
    """Counts every HTTP response by method and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.requests[(str(scope.get("method", "")), status)] += 1
            self.metrics.latency.observe(time.perf_counter() - started)


def _lines(name: str, kind: str, value: Any, help_text: str = "") -> list[str]:
    out = [f"# HELP {name} {help_text}"] if help_text else []
    return [*out, f"# TYPE {name} {kind}", f"{name} {value}"]


def _histogram(name: str, hist: Histogram) -> list[str]:
    lines = [f"# TYPE {name} histogram"]
    running = 0
    for bound, count in zip(hist.buckets, hist.counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
    lines += [f'{name}_bucket{{le="+Inf"}} {hist.n}', f"{name}_sum {hist.total}",
              f"{name}_count {hist.n}"]
    return lines


def render(state: ApiState) -> str:
    m = state.api_metrics
    lines = [render_prometheus(state.core_metrics).rstrip("\n")]
    lines.append("# TYPE boundq_http_requests_total counter")
    for (method, status), n in sorted(m.requests.items()):
        lines.append(f'boundq_http_requests_total{{method="{method}",status="{status}"}} {n}')
    lines += _histogram("boundq_http_request_seconds", m.latency)
    lines += _lines("boundq_api_jobs_created_total", "counter", m.jobs_created)
    lines += _lines("boundq_api_pool_busy_total", "counter", m.pool_busy,
                    "503s after waiting the bounded time for a connection")
    lines += _lines("boundq_api_db_unavailable_total", "counter", m.db_unavailable,
                    "503s answered at once while the database is down")
    lines += _lines("boundq_api_queue_full_total", "counter", m.queue_full,
                    "429s because waiting jobs reached MAX_QUEUE_DEPTH")
    lines += _lines("boundq_api_group_commits_total", "counter", m.group_batches)
    lines += _histogram("boundq_api_group_commit_size", m.group_batch_size)
    lines += _lines("boundq_api_database_up", "gauge", int(state.monitor.up))
    lines += _lines("boundq_api_waiting_jobs", "gauge", state.monitor.waiting,
                    "jobs with status new (cached, capped at MAX_QUEUE_DEPTH + 1)")
    for key, value in sorted(state.pool.get_stats().items()):
        lines += _lines(f"boundq_api_pool_{key}", "gauge", value)
    return "\n".join(lines) + "\n"
