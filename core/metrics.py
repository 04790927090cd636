"""Metrics: cheap counters on the hot path, exported through prometheus-client.

A worker counts in plain attributes and fixed-bucket histograms (no lock, no call per job:
the core is single-threaded asyncio). `Exporter.flush()` moves what changed since the last
flush into prometheus-client's metrics, once a second and when the worker stops, so a job
costs the same with metrics on. prometheus-client does the rest: the text format, and its
multiprocess mode: when PROMETHEUS_MULTIPROC_DIR is set (the supervisors of `boundq serve`
and `boundq worker --processes N` set it for their children), every process writes its
values there and one scrape reads them all (`render_all`).

Names (unchanged from the hand-written exporter this replaced): boundq_jobs_<counter>_total,
boundq_in_flight, boundq_in_flight_high_water, boundq_<gauge>, and the histograms
boundq_queue_wait_seconds (run_at to claim) and boundq_run_seconds (handler run time).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def quantile(self, q: float) -> float:
        """Upper bucket bound holding the q-quantile (inf past the last bucket)."""
        if not self.n:
            return 0.0
        rank, seen = q * self.n, 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return float("inf")


@dataclass
class Metrics:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0  # attempts that ended in error or timeout
    retried: int = 0  # of those, sent back to wait
    dead_lettered: int = 0
    lost_leases: int = 0  # heartbeat found the job no longer ours
    fenced_writes: int = 0  # a completion/failure matched zero rows
    reaped: int = 0
    released: int = 0
    db_errors: int = 0
    in_flight: int = 0
    in_flight_high_water: int = 0
    queue_wait: Histogram = field(default_factory=Histogram)
    run_time: Histogram = field(default_factory=Histogram)
    gauges: dict[str, Callable[[], float]] = field(default_factory=dict)

    COUNTERS = ("claimed", "succeeded", "failed", "retried", "dead_lettered", "lost_leases",
                "fenced_writes", "reaped", "released", "db_errors")

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {name: getattr(self, name) for name in self.COUNTERS}
        out["in_flight"] = self.in_flight
        out["in_flight_high_water"] = self.in_flight_high_water
        for name, read in self.gauges.items():
            out[name] = read()
        return out


# --- prometheus-client --------------------------------------------------------------------
_HELP = {
    "claimed": "attempts started (jobs claimed)",
    "succeeded": "attempts that succeeded (completion written)",
    "failed": "attempts that ended in an error or a timeout",
    "retried": "failed attempts sent back to wait (backoff)",
    "dead_lettered": "jobs that ended failed",
    "lost_leases": "leases the heartbeat found lost (the task was cancelled)",
    "fenced_writes": "outcomes the database refused: the lease was no longer this owner's",
    "reaped": "expired leases this process's reaper took back",
    "released": "leases handed back at shutdown",
    "db_errors": "database errors a loop backed off from",
}


class PromHistogramFeed:
    """Adds a local Histogram's new observations to a prometheus-client histogram with the
    same buckets, bucket by bucket (prometheus-client has no bulk observe: this uses its
    per-bucket value objects, `_buckets` and `_sum`; tests/test_metrics.py checks the
    exposition it produces)."""

    def __init__(self, target: Any, source: Histogram) -> None:
        self.target = target
        self.source = source
        self._counts = [0] * len(source.counts)
        self._total = 0.0

    def flush(self) -> None:
        counts, total = self.source.counts, self.source.total
        buckets = self.target._buckets
        for i, count in enumerate(counts):
            if count != self._counts[i]:
                buckets[i].inc(count - self._counts[i])
                self._counts[i] = count
        if total != self._total:
            self.target._sum.inc(total - self._total)
            self._total = total


class _Family:
    """prometheus-client metrics of one kind, created once per process (a registry
    refuses a name twice, and tests run many workers in one process)."""

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}

    def get(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._made:
            self._made[name] = make()
        return self._made[name]


_FAMILY = _Family()


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Any:
    from prometheus_client import Counter

    return _FAMILY.get(name, lambda: Counter(name, doc, labels))


GaugeMode = Literal["livesum", "livemax", "livemin"]


def gauge(name: str, doc: str, mode: GaugeMode = "livesum", labels: Sequence[str] = ()) -> Any:
    from prometheus_client import Gauge

    return _FAMILY.get(name, lambda: Gauge(name, doc, labels, multiprocess_mode=mode))


def histogram(name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()) -> Any:
    from prometheus_client import Histogram as PromHistogram

    return _FAMILY.get(name, lambda: PromHistogram(name, doc, labels, buckets=list(buckets)))


class Exporter:
    """Moves a Metrics' changes into prometheus-client (call flush() now and then)."""

    def __init__(self, metrics: Metrics, prefix: str = "boundq") -> None:
        self.metrics = metrics
        self.prefix = prefix
        self._last = dict.fromkeys(Metrics.COUNTERS, 0)
        self._counters = {name: counter(f"{prefix}_jobs_{name}", _HELP[name])
                          for name in Metrics.COUNTERS}
        self._histograms = [
            PromHistogramFeed(histogram(f"{prefix}_queue_wait_seconds",
                                        "run_at to claim (pickup latency)", LATENCY_BUCKETS),
                              metrics.queue_wait),
            PromHistogramFeed(histogram(f"{prefix}_run_seconds", "handler run time",
                                        LATENCY_BUCKETS), metrics.run_time),
        ]

    def flush(self) -> None:
        m = self.metrics
        # Histograms first: a scrape that reads the files mid-flush (another process serves
        # it) then never sees a job counted as claimed or succeeded before its latencies.
        for feed in self._histograms:
            feed.flush()
        for name, target in self._counters.items():
            value = getattr(m, name)
            if value != self._last[name]:
                target.inc(value - self._last[name])
                self._last[name] = value
        gauge(f"{self.prefix}_in_flight", "jobs running now").set(m.in_flight)
        gauge(f"{self.prefix}_in_flight_high_water", "most jobs running at once",
              "livemax").set(m.in_flight_high_water)
        for name, read in m.gauges.items():
            mode: GaugeMode = "livemax" if name.endswith("high_water") else "livesum"
            gauge(f"{self.prefix}_{name}", name.replace("_", " "), mode).set(read())


def render_all() -> bytes:
    """Every metric of this process, or of every process sharing its multiprocess
    directory, in the Prometheus text format."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


SERVED_ENV = "BOUNDQ_METRICS_SERVED"  # host:port whose /metrics serves every process


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """`/metrics` on `port` from a thread of this process (prometheus-client's server):
    this process's metrics, or every process's in multiprocess mode.

    In multiprocess mode one process serves them all: a supervisor calls this before it
    starts its children, and they inherit METRICS_PORT with the mark below, so they do
    not try to bind the port again (the second bind failed, and the child with it)."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    address = f"{host}:{port}"
    if os.environ.get(MULTIPROC_ENV) and os.environ.get(SERVED_ENV) == address:
        return
    registry = REGISTRY
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
    if os.environ.get(MULTIPROC_ENV):
        os.environ[SERVED_ENV] = address
