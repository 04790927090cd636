"""The API's own counters, the middleware that fills them, and their export.

The middleware counts in plain attributes (cheap per request); ApiExporter moves them into
prometheus-client before each scrape. `GET /metrics` renders everything prometheus-client
holds: with `boundq serve`, the API process's metrics and every worker process's
(multiprocess mode, core/metrics.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boundq.core.metrics import (
    LATENCY_BUCKETS,
    Histogram,
    PromHistogramFeed,
    counter,
    gauge,
    histogram,
)

BATCH_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0)


@dataclass
class ApiMetrics:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)
    jobs_created: int = 0
    pool_busy: int = 0  # 503: no connection within the wait bound
    db_unavailable: int = 0  # 503: fast-failed while the database is down
    queue_full: int = 0  # 429: MAX_QUEUE_DEPTH reached
    shed: int = 0  # 429: refused at the door (creates in flight, event loop late)
    group_batches: int = 0
    events_dropped: int = 0  # GET /events streams dropped for falling behind
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


class ApiExporter:
    """Moves the API's counts into prometheus-client (before each scrape)."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.m = metrics
        self._requests = counter("boundq_http_requests", "HTTP responses by method and status",
                                 ("method", "status"))
        self._sent: Counter[tuple[str, int]] = Counter()
        self._latency = PromHistogramFeed(
            histogram("boundq_http_request_seconds", "time to answer a request",
                      LATENCY_BUCKETS), metrics.latency)
        self._batch = PromHistogramFeed(
            histogram("boundq_api_group_commit_size", "creates per group commit", BATCH_BUCKETS),
            metrics.group_batch_size)
        self._counters = {
            "jobs_created": counter("boundq_api_jobs_created", "jobs created through the API"),
            "pool_busy": counter("boundq_api_pool_busy",
                                 "503s after waiting the bounded time for a connection"),
            "db_unavailable": counter("boundq_api_db_unavailable",
                                      "503s answered at once while the database is down"),
            "queue_full": counter("boundq_api_queue_full",
                                  "429s because waiting jobs reached MAX_QUEUE_DEPTH"),
            "shed": counter("boundq_api_shed", "429s answered at the door: too many creates in "
                            "flight, or the event loop running late"),
            "group_batches": counter("boundq_api_group_commits", "group commits written"),
            "events_dropped": counter("boundq_api_events_dropped", "GET /events streams "
                                      "dropped because their client fell behind"),
        }
        self._last: dict[str, int] = dict.fromkeys(self._counters, 0)

    def flush(self, database_up: bool, waiting: int, pool_stats: Mapping[str, int],
              loop_lag_s: float, event_streams: int = 0) -> None:
        for key, n in self.m.requests.items():
            if n != self._sent[key]:
                self._requests.labels(key[0], str(key[1])).inc(n - self._sent[key])
                self._sent[key] = n
        for name, target in self._counters.items():
            value = getattr(self.m, name)
            if value != self._last[name]:
                target.inc(value - self._last[name])
                self._last[name] = value
        self._latency.flush()
        self._batch.flush()
        # Across API processes: up only if every one reaches the database; the largest
        # waiting figure and lag; pool figures summed.
        gauge("boundq_api_database_up", "1 while the database answers", "livemin").set(
            int(database_up))
        gauge("boundq_api_waiting_jobs", "jobs with status new (cached, capped at "
              "MAX_QUEUE_DEPTH + 1)", "livemax").set(waiting)
        gauge("boundq_api_event_loop_lag_seconds", "how late the API's event loop runs",
              "livemax").set(round(loop_lag_s, 6))
        gauge("boundq_api_event_streams", "GET /events streams open").set(event_streams)
        for stat, value in pool_stats.items():
            gauge(f"boundq_api_pool_{stat}", f"API pool: {stat}").set(value)
