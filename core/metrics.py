"""Process-local counters, gauges and histograms for a metrics endpoint to export.

Plain attributes and fixed-bucket histograms: cheap enough for the job hot path (no locks;
the core is single-threaded asyncio). `render_prometheus` writes the text format.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)


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
    retried: int = 0  # of those, sent back to `new`
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


def _histogram_lines(name: str, help_text: str, hist: Histogram) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    running = 0
    for bound, count in zip(hist.buckets, hist.counts, strict=False):
        running += count
        lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {hist.n}')
    lines.append(f"{name}_sum {hist.total}")
    lines.append(f"{name}_count {hist.n}")
    return lines


def render_prometheus(metrics: Metrics, prefix: str = "boundq") -> str:
    lines: list[str] = []
    for name in Metrics.COUNTERS:
        full = f"{prefix}_jobs_{name}_total"
        lines += [f"# TYPE {full} counter", f"{full} {getattr(metrics, name)}"]
    for name in ("in_flight", "in_flight_high_water"):
        full = f"{prefix}_{name}"
        lines += [f"# TYPE {full} gauge", f"{full} {getattr(metrics, name)}"]
    for name, read in sorted(metrics.gauges.items()):
        full = f"{prefix}_{name}"
        lines += [f"# TYPE {full} gauge", f"{full} {read()}"]
    lines += _histogram_lines(f"{prefix}_queue_wait_seconds", "enqueue (run_at) to claim",
                              metrics.queue_wait)
    lines += _histogram_lines(f"{prefix}_run_seconds", "handler run time", metrics.run_time)
    return "\n".join(lines) + "\n"
